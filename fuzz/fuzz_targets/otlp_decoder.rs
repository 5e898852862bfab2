//! Fuzzes the OTLP request decoder and the conversion to samples with arbitrary bytes, as
//! protobuf, as JSON and as a gzip body: none may panic, and whatever converts must satisfy the
//! limits it was converted under.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use otelscale::ingest::convert::{convert_request, ConvertLimits};
use otelscale::ingest::decode::{decode_request, decompress, PayloadFormat};
use otelscale::ingest::Rejections;
use otelscale::store::SampleBatch;

const LIMITS: ConvertLimits = ConvertLimits {
    labels_per_series_max: 16,
    label_name_bytes_max: 64,
    label_value_bytes_max: 256,
    metric_name_bytes_max: 128,
    future_skew_ms_max: 300_000,
};

fuzz_target!(|data: &[u8]| {
    let now_ms = 1_700_000_000_000;
    for format in [PayloadFormat::Protobuf, PayloadFormat::Json] {
        if let Ok(request) = decode_request(data, format) {
            let mut batch = SampleBatch::default();
            let mut rejections = Rejections::default();
            convert_request(&request, &LIMITS, now_ms, &mut batch, &mut rejections);
            for sample in &batch.samples {
                assert!(!sample.value.is_nan());
                assert!(sample.key.labels().len() <= LIMITS.labels_per_series_max);
                assert!(sample.timestamp_ms <= now_ms + LIMITS.future_skew_ms_max);
            }
        }
    }
    let _ = decompress(Bytes::copy_from_slice(data), Some("gzip"), 1 << 20);
});
