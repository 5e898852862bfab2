//! Reads the server's own `/metrics` so a run can check its figures against what the server counted.

use std::net::SocketAddr;

/// Sums every sample of `metric` (all label sets) in a Prometheus text page.
pub fn sum_of(page: &str, metric: &str) -> f64 {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| line.strip_prefix(metric).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' ')))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub async fn scrape(admin: SocketAddr) -> anyhow::Result<String> {
    Ok(reqwest::get(format!("http://{admin}/metrics")).await?.error_for_status()?.text().await?)
}

/// Points the server has received in all (accepted or rejected), over every transport.
pub async fn points_received(admin: SocketAddr) -> anyhow::Result<u64> {
    Ok(sum_of(&scrape(admin).await?, "otelscale_points_received_total") as u64)
}

/// Points the server has rejected, for every reason.
pub async fn points_rejected(admin: SocketAddr) -> anyhow::Result<u64> {
    Ok(sum_of(&scrape(admin).await?, "otelscale_points_rejected_total") as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_across_label_sets_only_for_the_named_metric() {
        let page = "# HELP x\notelscale_points_received_total{transport=\"grpc\"} 10\n\
                    otelscale_points_received_total{transport=\"http\"} 5\n\
                    otelscale_points_received_total_other 100\notelscale_series 3\n";
        assert_eq!(sum_of(page, "otelscale_points_received_total"), 15.0);
        assert_eq!(sum_of(page, "otelscale_series"), 3.0);
        assert_eq!(sum_of(page, "missing"), 0.0);
    }
}
