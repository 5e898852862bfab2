//! The plain manifests (`deploy/kubernetes/otelscale.yaml`) and the Dockerfile: the Deployment
//! passes every flag the server accepts, ports and probe paths are the server's own (checked on
//! a running server), and every setting agrees with the chart's values.

use std::collections::{BTreeMap, BTreeSet};

use crate::chart_values::{chart_values, expected_args, merged};
use crate::common::TestServer;
use crate::deploy_files::{
    container, container_ports, json, mounted_secret_files, of_kind, plain_manifests, read, string_list, the_one,
    yaml_file,
};
use crate::serve_flags::{passes_flag, port_of_address, serve_flags, server_accepts, ADDRESS_FLAGS, DEFAULT_PORTS};

#[test]
fn the_deployment_passes_every_flag_and_the_server_accepts_the_arguments() {
    let values = chart_values();
    let documents = plain_manifests();
    let deployment = the_one(&documents, "Deployment");
    let args = string_list(&container(deployment)["args"]);
    assert_eq!(args, expected_args(&values), "kubernetes/otelscale.yaml's arguments are not the chart's");

    // Every flag with a value by default is passed; the others (a switch that is off, a flag
    // without a default) are reachable by setting their key.
    for flag in serve_flags() {
        assert_eq!(
            passes_flag(&args, &flag.name),
            flag.default.is_some(),
            "--{} in the Deployment's arguments: {args:?}",
            flag.name
        );
    }
    let output = server_accepts(&args);
    assert!(
        output.status.success(),
        "otelscale refuses the manifests' arguments: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Every flag set (switches on, the snapshot volume's directory): still accepted.
    let full_values = merged(&values, &yaml_file("helm/otelscale/ci/full-values.yaml")[0]);
    let full_args = expected_args(&full_values);
    for flag in serve_flags() {
        assert!(passes_flag(&full_args, &flag.name), "ci/full-values.yaml does not set --{}", flag.name);
    }
    let output = server_accepts(&full_args);
    assert!(output.status.success(), "otelscale refuses {full_args:?}: {}", String::from_utf8_lossy(&output.stderr));

    // The Deployment template builds its arguments from the whole config map.
    let deployment_template = read("helm/otelscale/templates/deployment.yaml");
    let helpers = read("helm/otelscale/templates/_helpers.tpl");
    assert!(deployment_template.contains(r#"include "otelscale.args""#));
    assert!(helpers.contains(r#"define "otelscale.args""#) && helpers.contains("range $flag, $value := $config"));
}

#[tokio::test]
async fn ports_and_probe_paths_are_the_servers() {
    let values = chart_values();
    let flags = serve_flags();
    let default_of = |name: &str| flags.iter().find(|flag| flag.name == name).and_then(|flag| flag.default.clone());
    for ((port_name, port), (address_port_name, address_flag)) in DEFAULT_PORTS.iter().zip(ADDRESS_FLAGS) {
        assert_eq!(*port_name, address_port_name);
        let server_default = default_of(address_flag).expect("address flags have defaults");
        assert_eq!(port_of_address(&server_default), *port, "--{address_flag} default");
        assert_eq!(values["service"]["ports"][port_name].as_u64(), Some(*port), "values service.ports.{port_name}");
    }

    let documents = plain_manifests();
    let service = the_one(&documents, "Service");
    let service_ports: BTreeMap<String, (u64, String)> = service["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|port| {
            let name = port["name"].as_str().unwrap().to_owned();
            (name, (port["port"].as_u64().unwrap(), port["targetPort"].as_str().unwrap().to_owned()))
        })
        .collect();
    let expected: BTreeMap<String, (u64, String)> =
        DEFAULT_PORTS.iter().map(|(name, port)| (name.to_string(), (*port, name.to_string()))).collect();
    assert_eq!(service_ports, expected, "Service ports (number, targetPort) by name");
    let deployment = the_one(&documents, "Deployment");
    let expected_container_ports: BTreeMap<String, u64> =
        DEFAULT_PORTS.iter().map(|(name, port)| (name.to_string(), *port)).collect();
    assert_eq!(container_ports(container(deployment)), expected_container_ports);

    let dockerfile = read("Dockerfile");
    let exposed: BTreeSet<u64> = dockerfile
        .lines()
        .filter_map(|line| line.strip_prefix("EXPOSE "))
        .flat_map(|ports| ports.split_whitespace().map(|port| port.parse::<u64>().unwrap()))
        .collect();
    assert_eq!(exposed, DEFAULT_PORTS.iter().map(|(_, port)| *port).collect());
    assert!(dockerfile.contains(r#"ENTRYPOINT ["/usr/local/bin/otelscale", "serve"]"#));
    assert!(dockerfile.lines().any(|line| line == "USER 65532:65532"));

    // The probe and scrape paths answer on a running server's admin port.
    let mut paths = BTreeSet::new();
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let http_get = &container(deployment)[probe]["httpGet"];
        assert_eq!(http_get["port"].as_str(), Some("admin"), "{probe} port");
        paths.insert(http_get["path"].as_str().unwrap().to_owned());
    }
    assert_eq!(container(deployment)["livenessProbe"]["httpGet"]["path"].as_str(), Some("/healthz"));
    assert_eq!(container(deployment)["readinessProbe"]["httpGet"]["path"].as_str(), Some("/readyz"));
    paths.insert(values["serviceMonitor"]["path"].as_str().unwrap().to_owned());
    let server = TestServer::start().await;
    let client = reqwest::Client::new();
    for path in &paths {
        let response = client.get(server.admin_url(path)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "GET {path} on the admin port");
    }
    server.stop().await;
}

#[test]
fn plain_manifests_agree_with_the_chart_values() {
    let values = chart_values();
    let chart = yaml_file("helm/otelscale/Chart.yaml").remove(0);
    let documents = plain_manifests();

    let namespace = the_one(&documents, "Namespace");
    assert_eq!(namespace["metadata"]["name"].as_str(), Some("otelscale"));
    for document in &documents {
        if document["kind"].as_str() != Some("Namespace") {
            assert_eq!(document["metadata"]["namespace"].as_str(), Some("otelscale"), "{:?}", document["kind"]);
        }
    }
    for optional in ["PersistentVolumeClaim", "PodDisruptionBudget", "ServiceMonitor"] {
        assert!(of_kind(&documents, optional).is_empty(), "{optional} is off by default");
    }

    let deployment = the_one(&documents, "Deployment");
    assert!(mounted_secret_files(deployment).is_empty(), "TLS is off by default");
    let container = container(deployment);
    let tag = values["image"]["tag"].as_str().filter(|tag| !tag.is_empty()).or(chart["appVersion"].as_str()).unwrap();
    let image = format!("{}:{tag}", values["image"]["repository"].as_str().unwrap());
    assert_eq!(container["image"].as_str(), Some(image.as_str()));
    assert_eq!(container["imagePullPolicy"], values["image"]["pullPolicy"]);
    assert_eq!(deployment["spec"]["replicas"], values["replicaCount"]);
    assert_eq!(json(&deployment["spec"]["strategy"]), json(&values["strategy"]));
    assert_eq!(json(&container["resources"]), json(&values["resources"]));
    for (probe, key) in [("startupProbe", "startup"), ("livenessProbe", "liveness"), ("readinessProbe", "readiness")] {
        assert_eq!(container[probe]["httpGet"]["path"], values["probes"][key]["path"], "{probe}");
        assert_eq!(container[probe]["periodSeconds"], values["probes"][key]["periodSeconds"], "{probe}");
    }

    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(json(&pod["securityContext"]), json(&values["podSecurityContext"]));
    assert_eq!(json(&container["securityContext"]), json(&values["securityContext"]));
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(pod["securityContext"]["runAsUser"].as_u64(), Some(65532));
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"].as_str(), Some("RuntimeDefault"));
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(container["securityContext"]["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(string_list(&container["securityContext"]["capabilities"]["drop"]), ["ALL"]);

    let service_account = the_one(&documents, "ServiceAccount");
    assert_eq!(pod["serviceAccountName"], service_account["metadata"]["name"]);
    let selector = &deployment["spec"]["selector"]["matchLabels"];
    assert_eq!(json(&the_one(&documents, "Service")["spec"]["selector"]), json(selector));
    for (key, value) in selector.as_mapping().unwrap() {
        assert_eq!(&deployment["spec"]["template"]["metadata"]["labels"][key.as_str().unwrap()], value);
    }
}
