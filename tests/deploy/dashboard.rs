//! The Grafana dashboard queries only metrics the server exports, and shows what an operator
//! needs.

use std::collections::BTreeSet;

use crate::common::TestServer;
use crate::deploy_files::read;

/// Every `otelscale_…` name in `text`.
fn otelscale_metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("otelscale_") {
        let tail = &rest[start..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// Every query string of a Grafana dashboard: panel `expr`s and templating queries.
fn dashboard_queries(value: &serde_json::Value, found: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(object) => {
            for (key, child) in object {
                match (key.as_str(), child) {
                    ("expr" | "definition" | "query", serde_json::Value::String(query)) => found.push(query.clone()),
                    _ => dashboard_queries(child, found),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| dashboard_queries(item, found)),
        _ => {}
    }
}

#[tokio::test]
async fn grafana_dashboard_queries_only_exported_metrics() {
    let dashboard: serde_json::Value = serde_json::from_str(&read("grafana/otelscale.json")).unwrap();
    let mut queries = Vec::new();
    dashboard_queries(&dashboard["panels"], &mut queries);
    dashboard_queries(&dashboard["templating"], &mut queries);
    let used: BTreeSet<String> = queries.iter().flat_map(|query| otelscale_metric_names(query)).collect();

    let server = TestServer::start().await;
    let exposition = reqwest::get(server.admin_url("/metrics")).await.unwrap().text().await.unwrap();
    server.stop().await;
    let exported: BTreeSet<String> = exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| line.split(['{', ' ']).next().unwrap().to_owned())
        .collect();
    let unknown: Vec<_> = used.difference(&exported).collect();
    assert!(unknown.is_empty(), "the dashboard queries metrics the server does not export: {unknown:?}");

    // What an operator needs to see, each on at least one panel.
    for needed in [
        "otelscale_points_received_total",
        "otelscale_points_rejected_total",
        "otelscale_requests_total",
        "otelscale_series",
        "otelscale_store_heap_bytes",
        "otelscale_query_duration_seconds_bucket",
        "otelscale_streams_open",
        "otelscale_scaler_requests_total",
        "otelscale_snapshot_last_success_timestamp_seconds",
        "otelscale_snapshot_duration_seconds",
        "otelscale_snapshot_bytes",
        "otelscale_snapshot_failures_total",
    ] {
        assert!(used.contains(needed), "no panel shows {needed}");
    }
    let panel_ids: Vec<u64> =
        dashboard["panels"].as_array().unwrap().iter().map(|panel| panel["id"].as_u64().unwrap()).collect();
    assert_eq!(panel_ids.iter().collect::<BTreeSet<_>>().len(), panel_ids.len(), "panel ids are unique");
}
