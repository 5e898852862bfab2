//! The examples under `deploy/examples/`: every ScaledObject's trigger metadata is accepted by
//! the scaler, and every Collector configuration pushes to the OTLP port.

use std::collections::BTreeSet;

use otelscale::scaler::proto::ScaledObjectRef;

use crate::chart_values::chart_values;
use crate::common::TestServer;
use crate::deploy_files::{files_with_extension, of_kind, string_list, trigger_metadata, yaml_documents, SERVICE_HOST};

#[tokio::test]
async fn example_scaled_objects_are_accepted_by_the_scaler() {
    let values = chart_values();
    let scaler_address = format!("{SERVICE_HOST}:{}", values["service"]["ports"]["scaler"].as_u64().unwrap());
    let server = TestServer::start().await;
    let mut scaler = server.scaler_client().await;
    let mut trigger_types = BTreeSet::new();
    let mut files_with_triggers = BTreeSet::new();
    let mut n_triggers = 0;
    for path in files_with_extension("examples", &["yaml"]) {
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let documents = yaml_documents(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for scaled_object in of_kind(&documents, "ScaledObject") {
            let object_name = scaled_object["metadata"]["name"].as_str().unwrap();
            for (trigger_idx, trigger) in scaled_object["spec"]["triggers"].as_sequence().unwrap().iter().enumerate() {
                let context = format!("{name}: {object_name} trigger {trigger_idx}");
                let trigger_type = trigger["type"].as_str().unwrap();
                assert!(["external", "external-push"].contains(&trigger_type), "{context}: type {trigger_type}");
                if let Some(metric_type) = trigger["metricType"].as_str() {
                    assert!(["AverageValue", "Value"].contains(&metric_type), "{context}: metricType {metric_type}");
                }
                let metadata = trigger_metadata(trigger, &context);
                assert_eq!(metadata.get("scalerAddress"), Some(&scaler_address), "{context}");
                if let Some(reference) = trigger["authenticationRef"]["name"].as_str() {
                    let authentication = of_kind(&documents, "TriggerAuthentication")
                        .into_iter()
                        .find(|auth| auth["metadata"]["name"].as_str() == Some(reference))
                        .unwrap_or_else(|| panic!("{context}: no TriggerAuthentication {reference} in the file"));
                    let parameters: BTreeSet<&str> = authentication["spec"]["secretTargetRef"]
                        .as_sequence()
                        .unwrap()
                        .iter()
                        .map(|target| target["parameter"].as_str().unwrap())
                        .collect();
                    assert_eq!(parameters, BTreeSet::from(["caCert", "tlsClientCert", "tlsClientKey"]), "{context}");
                }

                let target_value: f64 = metadata["targetValue"].parse().unwrap();
                let request = ScaledObjectRef {
                    name: object_name.to_owned(),
                    namespace: scaled_object["metadata"]["namespace"].as_str().unwrap_or("default").to_owned(),
                    scaler_metadata: metadata,
                };
                let spec = scaler
                    .get_metric_spec(request)
                    .await
                    .unwrap_or_else(|status| panic!("{context}: GetMetricSpec refused: {}", status.message()))
                    .into_inner();
                assert_eq!(spec.metric_specs.len(), 1, "{context}");
                assert_eq!(spec.metric_specs[0].target_size_float, target_value, "{context}");
                trigger_types.insert(trigger_type.to_owned());
                files_with_triggers.insert(name.clone());
                n_triggers += 1;
            }
        }
    }
    assert_eq!(trigger_types, BTreeSet::from(["external".to_owned(), "external-push".to_owned()]));
    for required in ["scaledobject.yaml", "scaledobject-vllm.yaml", "scaledobject-dcgm.yaml", "scaledobject-tls.yaml"] {
        assert!(files_with_triggers.contains(required), "no ScaledObject trigger checked in {required}");
    }
    assert!(n_triggers >= 8, "only {n_triggers} triggers checked");
    server.stop().await;
}

#[test]
fn collector_examples_push_to_the_otlp_port() {
    let values = chart_values();
    let otlp_endpoint = format!("{SERVICE_HOST}:{}", values["service"]["ports"]["otlp-grpc"].as_u64().unwrap());
    let mut collectors = 0;
    for path in files_with_extension("examples", &["yaml"]) {
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let config = yaml_documents(&std::fs::read_to_string(&path).unwrap()).unwrap().remove(0);
        let Some(exporters) = config["exporters"].as_mapping() else { continue };
        collectors += 1;
        let otlp_exporters: Vec<&str> = exporters
            .iter()
            .map(|(key, _)| key.as_str().unwrap())
            .filter(|key| *key == "otlp" || key.starts_with("otlp/"))
            .collect();
        assert!(!otlp_exporters.is_empty(), "{name}: no otlp exporter");
        for exporter in &otlp_exporters {
            assert_eq!(config["exporters"][*exporter]["endpoint"].as_str(), Some(otlp_endpoint.as_str()), "{name}");
        }
        for (pipeline_name, pipeline) in config["service"]["pipelines"].as_mapping().unwrap() {
            let pipeline_exporters = string_list(&pipeline["exporters"]);
            assert!(
                pipeline_exporters.iter().any(|exporter| otlp_exporters.contains(&exporter.as_str())),
                "{name}: {pipeline_name:?}"
            );
            for processor in string_list(&pipeline["processors"]) {
                let configured = config["processors"].get(processor.as_str()).is_some();
                assert!(configured, "{name}: processor {processor} is not configured");
            }
            if name == "collector-vllm.yaml" || name == "collector-dcgm.yaml" {
                assert!(string_list(&pipeline["processors"]).contains(&"k8sattributes".to_owned()), "{name}");
                assert!(
                    string_list(&pipeline["receivers"]).iter().any(|receiver| receiver.starts_with("prometheus")),
                    "{name}"
                );
            }
        }
    }
    assert!(collectors >= 3, "only {collectors} Collector configurations found");
}
