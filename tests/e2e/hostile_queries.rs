//! Hostile queries (the attack table's row 5): costly `metricQuery`s on the unauthenticated
//! admin API and on the scaler port, and huge series listings. Each is cut off with an answer
//! naming the limit, and meanwhile GetMetrics and `/healthz` keep answering.

use std::time::Duration;

use crate::common::*;

/// A loose liveness deadline: a probe answered within it counts as answered. Not a speed target.
const LIVENESS_DEADLINE: Duration = Duration::from_secs(5);

/// Series of the metric the costly queries read, each with eight labels of 100 bytes.
const LARGE_SERIES: usize = 5_000;

/// Stores `LARGE_SERIES` series of `big` and one small trigger series `small{model=m1}` = 7.
async fn seed(server: &TestServer) {
    let mut client = server.otlp_client().await;
    let now = now_unix_nano();
    let filler = "v".repeat(100);
    for batch_start in (0..LARGE_SERIES).step_by(1_000) {
        let points = (batch_start..batch_start + 1_000)
            .map(|series_idx| {
                let pod = format!("pod-{series_idx}");
                let labels: Vec<(String, String)> = (0..7)
                    .map(|label_idx| (format!("label_{label_idx}"), filler.clone()))
                    .chain([("pod".to_owned(), pod)])
                    .collect();
                let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                number_point(&labels, now, 1.0)
            })
            .collect();
        let response = client.export(request(&[], vec![gauge("big", points)])).await.unwrap().into_inner();
        assert!(response.partial_success.is_none(), "{:?}", response.partial_success);
    }
    let small = vec![gauge("small", vec![number_point(&[("model", "m1")], now, 7.0)])];
    client.export(request(&[], small)).await.unwrap();
}

/// 64 `!=` matchers with Unicode-heavy regexes and plain values, as row 5 sent them.
fn costly_query(regexes: bool) -> String {
    let matchers: Vec<String> = (0..64)
        .map(|idx| {
            if regexes {
                format!("label_{}!~\"\\\\w{{20}}\"", idx % 7)
            } else {
                format!("label_{}!=\"x{idx}\"", idx % 7)
            }
        })
        .collect();
    format!("sum(big{{{}}})", matchers.join(","))
}

/// Asserts GetMetrics on the small trigger and `/healthz` answer within [`LIVENESS_DEADLINE`].
async fn assert_signal_answers(server: &TestServer) {
    let value = tokio::time::timeout(
        LIVENESS_DEADLINE,
        server.get_metric_value(&[("metricQuery", "max(small{model=m1})"), ("targetValue", "1")]),
    )
    .await
    .expect("GetMetrics answered in time")
    .expect("GetMetrics succeeded");
    assert_eq!(value, 7.0);
    let healthz = tokio::time::timeout(LIVENESS_DEADLINE, reqwest::get(server.admin_url("/healthz")))
        .await
        .expect("/healthz answered in time")
        .expect("/healthz request");
    assert_eq!(healthz.status(), 200);
}

async fn admin_get(server: &TestServer, path: &str, params: &[(&str, &str)]) -> reqwest::Response {
    let url = reqwest::Url::parse_with_params(&server.admin_url(path), params).unwrap();
    reqwest::get(url).await.unwrap()
}

#[tokio::test]
async fn a_query_over_its_series_budget_is_refused_on_both_ports_naming_the_limit() {
    let server = TestServer::start_with(|config| config.query_series_max = 1_000).await;
    seed(&server).await;
    let query = costly_query(false);

    let response = admin_get(&server, "/api/v1/query", &[("metricQuery", &query)]).await;
    assert_eq!(response.status(), 422);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert!(answer["error"].as_str().unwrap().contains("--max-query-series"), "{answer}");

    let status = server.get_metric_value(&[("metricQuery", &query), ("targetValue", "1")]).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(status.message().contains("more than 1000 series"), "{}", status.message());

    // Within the budget (the cost is the series visited: a metric's series, matching or not),
    // the same store answers.
    let answer = server.admin_query(&[("metricQuery", "count(small{model=\"m1\"})")]).await;
    assert_eq!(answer["matchedSeries"], 1, "{answer}");
    assert_signal_answers(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn costly_admin_queries_do_not_hold_up_the_signal() {
    let server = TestServer::start_with(|config| config.admin_query_concurrency = 1).await;
    seed(&server).await;
    let query = costly_query(false);
    // A burst of costly admin queries, more than may run at once: they queue (or are refused
    // with 503) off the async runtime while the signal is probed.
    let burst: Vec<_> = (0..8)
        .map(|_| {
            let url = reqwest::Url::parse_with_params(&server.admin_url("/api/v1/query"), &[("metricQuery", &query)])
                .unwrap();
            tokio::spawn(async move { reqwest::get(url).await.map(|response| response.status().as_u16()) })
        })
        .collect();
    for _ in 0..5 {
        assert_signal_answers(&server).await;
    }
    for answered in burst {
        let status = answered.await.unwrap().unwrap();
        assert!(status == 200 || status == 503, "a costly admin query ends answered or refused, not {status}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_query_with_many_costly_regexes_is_refused_before_it_compiles_them_all() {
    let server = TestServer::start().await;
    seed(&server).await;
    let query = costly_query(true);
    let response = admin_get(&server, "/api/v1/query", &[("metricQuery", &query)]).await;
    assert_eq!(response.status(), 400);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert!(answer["error"].as_str().unwrap().contains("the regexes of one query share"), "{answer}");
    let status = server.get_metric_value(&[("metricQuery", &query), ("targetValue", "1")]).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_signal_answers(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn series_listings_are_capped_and_streamed() {
    let server = TestServer::start_with(|config| config.series_list_max = 2_000).await;
    seed(&server).await;
    let response = admin_get(&server, "/api/v1/series", &[("limit", "100000")]).await;
    assert_eq!(response.status(), 400);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert!(answer["error"].as_str().unwrap().contains("--max-series-list"), "{answer}");

    let response = admin_get(&server, "/api/v1/series", &[("limit", "2000"), ("match", "big")]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["otelscale-series-truncated"], "series_count");
    // Streamed: no length known up front, the body comes in chunks.
    assert!(response.headers().get(reqwest::header::CONTENT_LENGTH).is_none());
    let listed: Vec<serde_json::Value> = response.json().await.unwrap();
    assert_eq!(listed.len(), 2_000);
    assert!(listed.windows(2).all(|pair| pair[0]["labels"]["pod"] != pair[1]["labels"]["pod"]));
    assert!(listed.iter().all(|entry| entry["metric"] == "big" && entry["samples"] == 1));

    // Only the small metric's one series: complete, no truncation header.
    let response = admin_get(&server, "/api/v1/series", &[("match", "small")]).await;
    assert!(response.headers().get("otelscale-series-truncated").is_none());
    assert_eq!(response.json::<Vec<serde_json::Value>>().await.unwrap().len(), 1);
    assert_signal_answers(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn series_listings_stop_at_their_key_bytes_and_say_so() {
    // About 800 bytes per `big` key: 100 kB of keys is about 125 series.
    let server = TestServer::start_with(|config| config.series_list_bytes_max = 100_000).await;
    seed(&server).await;
    let response = admin_get(&server, "/api/v1/series", &[("limit", "2000"), ("match", "big")]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["otelscale-series-truncated"], "key_bytes");
    let body = response.bytes().await.unwrap();
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
    assert!((100..200).contains(&listed.len()), "{} series listed", listed.len());
    // The JSON answer stays in proportion to the key bytes allowed.
    assert!(body.len() < 200_000, "{} bytes", body.len());
    assert_signal_answers(&server).await;
    server.stop().await;
}
