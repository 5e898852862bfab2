//! KEDA's side of the external scaler: GetMetrics, IsActive and StreamIsActive calls, and the
//! HPA arithmetic KEDA's HorizontalPodAutoscaler applies to the answers.

use std::collections::HashMap;
use std::net::SocketAddr;

use otelscale::scaler::proto::external_scaler_client::ExternalScalerClient;
use otelscale::scaler::proto::{GetMetricsRequest, ScaledObjectRef};
use tonic::transport::Channel;

/// A trigger's metadata, as a ScaledObject carries it.
pub fn scaled_object(name: &str, metadata: &[(&str, String)]) -> ScaledObjectRef {
    ScaledObjectRef {
        name: name.to_owned(),
        namespace: "loadgen".to_owned(),
        scaler_metadata: metadata
            .iter()
            .map(|(key, value)| (key.to_string(), value.clone()))
            .collect::<HashMap<_, _>>(),
    }
}

pub async fn connect(addr: SocketAddr) -> anyhow::Result<ExternalScalerClient<Channel>> {
    let channel = Channel::from_shared(format!("http://{addr}"))?.tcp_nodelay(true).connect().await?;
    Ok(ExternalScalerClient::new(channel))
}

/// GetMetrics' `metricValueFloat`.
pub async fn metric_value(
    client: &mut ExternalScalerClient<Channel>,
    scaled_object: &ScaledObjectRef,
) -> Result<f64, tonic::Status> {
    let response = client
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(scaled_object.clone()),
            metric_name: "s0-loadgen".into(),
        })
        .await?
        .into_inner();
    response
        .metric_values
        .first()
        .map(|value| value.metric_value_float)
        .ok_or_else(|| tonic::Status::internal("GetMetrics answered without a value"))
}

/// The HPA's replica arithmetic for one metric, with its defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HpaPolicy {
    pub target_value: f64,
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// The HPA does nothing while `|value / target - 1|` is within this (Kubernetes default 0.1).
    pub tolerance: f64,
}

impl HpaPolicy {
    /// `desired = ceil(current × value / target)`, within `[min, max]`; unchanged inside the
    /// tolerance band.
    pub fn desired_replicas(&self, current_replicas: u32, metric_value: f64) -> u32 {
        let ratio = metric_value / self.target_value;
        if !ratio.is_finite() {
            return current_replicas.clamp(self.min_replicas, self.max_replicas);
        }
        if (ratio - 1.0).abs() <= self.tolerance {
            return current_replicas.clamp(self.min_replicas, self.max_replicas);
        }
        let desired = (current_replicas as f64 * ratio).ceil();
        (desired.max(0.0).min(u32::MAX as f64) as u32).clamp(self.min_replicas, self.max_replicas)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpa_formula_with_tolerance_and_bounds() {
        let policy = HpaPolicy { target_value: 500.0, min_replicas: 1, max_replicas: 15, tolerance: 0.1 };
        // 2 replicas at 1200 per pod against a target of 500: ceil(2 × 2.4) = 5.
        assert_eq!(policy.desired_replicas(2, 1200.0), 5);
        // Within 10% of the target: no change.
        assert_eq!(policy.desired_replicas(4, 540.0), 4);
        assert_eq!(policy.desired_replicas(4, 460.0), 4);
        // Scale down, but not below the minimum.
        assert_eq!(policy.desired_replicas(4, 100.0), 1);
        assert_eq!(policy.desired_replicas(10, 260.0), 6);
        // Never above the maximum.
        assert_eq!(policy.desired_replicas(10, 5_000.0), 15);
        assert_eq!(policy.desired_replicas(3, f64::NAN), 3);
    }
}
