//! What more than one bench builds: the DCGM-like series key of the snapshot bench and of the
//! instruction counts' restore.

use otelscale::store::{LabelPair, SeriesKey};

/// The DCGM-like key of series `series_idx`: one of four GPU metrics and 9 labels, of which the
/// host name, GPU UUID, pod and replica vary.
pub fn dcgm_key(series_idx: usize) -> SeriesKey {
    let gpu = series_idx / 8;
    SeriesKey::new(
        ["DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_SM_CLOCK"]
            [series_idx % 4],
        vec![
            LabelPair::new("Hostname", format!("gpu-node-{:05}", gpu / 8)),
            LabelPair::new("UUID", format!("GPU-{:08x}-1f2e-4d3c-8b7a-{:012x}", gpu, gpu * 7919)),
            LabelPair::new("device", format!("nvidia{}", gpu % 8)),
            LabelPair::new("gpu", (gpu % 8).to_string()),
            LabelPair::new("modelName", "NVIDIA H100 80GB HBM3"),
            LabelPair::new("namespace", "training"),
            LabelPair::new("pod", format!("trainer-{}", gpu / 8)),
            LabelPair::new("container", "trainer"),
            LabelPair::new("replica", (series_idx % 8).to_string()),
        ],
    )
}
