//! The deployment files under `deploy/`, checked against the real server without a cluster:
//! every YAML and JSON file parses; every flag of `otelscale serve --help` is a key of the Helm
//! chart's `config` values with the server's default and is an argument of the plain manifests'
//! Deployment; ports and probe paths are the server's own; the plain manifests agree with the
//! chart's values; every example ScaledObject's trigger metadata is accepted by the scaler; the
//! Grafana dashboard queries only metrics the server exports. Where the `helm-python-sdk`
//! package is installed, the chart is also rendered by Helm's engine (`deploy/helm/render.py`)
//! and compared with the committed manifests.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use otelscale::scaler::proto::ScaledObjectRef;
use serde::Deserialize;
use serde_yaml::Value;

use crate::common::TestServer;

/// The server's default ports, by Service port name.
const DEFAULT_PORTS: [(&str, u64); 4] = [("otlp-grpc", 4317), ("otlp-http", 4318), ("scaler", 8090), ("admin", 8080)];

/// The listen-address flag behind each port name.
const ADDRESS_FLAGS: [(&str, &str); 4] = [
    ("otlp-grpc", "otlp-grpc-addr"),
    ("otlp-http", "otlp-http-addr"),
    ("scaler", "scaler-addr"),
    ("admin", "admin-addr"),
];

/// The Service address the examples point at: release `otelscale` in namespace `otelscale`.
const SERVICE_HOST: &str = "otelscale.otelscale.svc";

/// The ports that can serve TLS, as named in the chart's `tls` values and in `--<port>-tls-*`.
const TLS_PORTS: [&str; 3] = ["otlp-grpc", "otlp-http", "scaler"];

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn deploy_path(relative: &str) -> PathBuf {
    repo_root().join("deploy").join(relative)
}

fn read(relative: &str) -> String {
    let path = deploy_path(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

fn files_under(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, found);
        } else {
            found.push(path);
        }
    }
    found.sort();
}

fn files_with_extension(relative_dir: &str, extensions: &[&str]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    files_under(&deploy_path(relative_dir), &mut files);
    files.retain(|path| path.extension().is_some_and(|ext| extensions.iter().any(|wanted| ext == *wanted)));
    files
}

/// Every document of a YAML stream, empty ones (only comments) left out.
fn yaml_documents(text: &str) -> Result<Vec<Value>, serde_yaml::Error> {
    let documents: Vec<Value> =
        serde_yaml::Deserializer::from_str(text).map(Value::deserialize).collect::<Result<_, _>>()?;
    Ok(documents.into_iter().filter(|document| !document.is_null()).collect())
}

fn yaml_file(relative: &str) -> Vec<Value> {
    yaml_documents(&read(relative)).unwrap_or_else(|err| panic!("deploy/{relative}: {err}"))
}

/// As JSON, whose objects compare without regard to key order.
fn json(value: &Value) -> serde_json::Value {
    serde_json::to_value(value).expect("YAML value as JSON")
}

fn chart_values() -> Value {
    yaml_file("helm/otelscale/values.yaml").remove(0)
}

fn chart_config(values: &Value) -> BTreeMap<String, Value> {
    let mapping = values["config"].as_mapping().expect("values.yaml has a `config` map");
    mapping
        .iter()
        .map(|(key, value)| (key.as_str().expect("config keys are strings").to_owned(), value.clone()))
        .collect()
}

/// `base` with `overrides` merged in, maps merged key by key (as `helm -f` does).
fn merged(base: &Value, overrides: &Value) -> Value {
    match (base, overrides) {
        (Value::Mapping(base), Value::Mapping(overrides)) => {
            let mut result = base.clone();
            for (key, value) in overrides {
                let merged_value = match result.get(key) {
                    Some(existing) => merged(existing, value),
                    None => value.clone(),
                };
                result.insert(key.clone(), merged_value);
            }
            Value::Mapping(result)
        }
        (_, overrides) => overrides.clone(),
    }
}

/// A scalar as the chart prints it; `None` for null and "".
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(text) if text.is_empty() => None,
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        other => panic!("config values are scalars, not {other:?}"),
    }
}

/// Where the chart mounts the TLS Secret of `port`.
fn tls_mount_dir(values: &Value, port: &str) -> String {
    let mount_path = values["tls"]["mountPath"].as_str().expect("values tls.mountPath");
    format!("{}/{port}", mount_path.trim_end_matches('/'))
}

/// The arguments the chart's `otelscale.args` template makes of `values`: one per set key of
/// `config` in key order (`--key=value`, a true switch as `--key`), `--snapshot-dir` for the
/// snapshot volume unless config names a directory, the TLS file flags of each port in `tls`
/// that config leaves unset, then `extraArgs`.
fn expected_args(values: &Value) -> Vec<String> {
    let mut config = chart_config(values);
    let snapshot_dir_set = config.get("snapshot-dir").and_then(scalar_text).is_some();
    if values["snapshots"]["enabled"].as_bool() == Some(true) && !snapshot_dir_set {
        config.insert("snapshot-dir".to_owned(), values["snapshots"]["mountPath"].clone());
    }
    for port in TLS_PORTS {
        let tls = &values["tls"][port];
        if tls["enabled"].as_bool() != Some(true) {
            continue;
        }
        let mut files = vec![("cert", "tls.crt"), ("key", "tls.key")];
        if tls["requireClientCert"].as_bool() == Some(true) {
            files.push(("client-ca", "client-ca.crt"));
        }
        for (suffix, file) in files {
            let flag = format!("{port}-tls-{suffix}");
            if config.get(&flag).and_then(scalar_text).is_none() {
                config.insert(flag, Value::String(format!("{}/{file}", tls_mount_dir(values, port))));
            }
        }
    }
    let mut args: Vec<String> = config
        .iter()
        .filter_map(|(flag, value)| match value {
            Value::Bool(true) => Some(format!("--{flag}")),
            Value::Bool(false) => None,
            other => scalar_text(other).map(|text| format!("--{flag}={text}")),
        })
        .collect();
    if let Some(extra) = values["extraArgs"].as_sequence() {
        args.extend(extra.iter().map(|arg| arg.as_str().expect("extraArgs are strings").to_owned()));
    }
    args
}

/// One flag of `otelscale serve --help`.
#[derive(Debug)]
struct ServeFlag {
    name: String,
    takes_value: bool,
    default: Option<String>,
}

fn otelscale_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_otelscale"));
    for (name, _) in std::env::vars() {
        if name.starts_with("OTELSCALE_") {
            command.env_remove(name);
        }
    }
    command
}

/// The flags the real binary documents, parsed from its long help.
fn serve_flags() -> Vec<ServeFlag> {
    let output = otelscale_command().args(["serve", "--help"]).output().expect("run otelscale serve --help");
    assert!(output.status.success(), "otelscale serve --help failed: {}", String::from_utf8_lossy(&output.stderr));
    let help = String::from_utf8(output.stdout).unwrap();
    let mut flags: Vec<ServeFlag> = Vec::new();
    for line in help.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("--") {
            let name = rest.split_whitespace().next().unwrap().to_owned();
            flags.push(ServeFlag { name, takes_value: rest.contains(" <"), default: None });
        } else if let Some(default) = line.strip_prefix("[default: ").and_then(|rest| rest.strip_suffix(']')) {
            flags.last_mut().expect("a default follows its flag").default = Some(default.to_owned());
        }
    }
    assert!(flags.len() >= 20, "too few flags parsed from:\n{help}");
    flags
}

/// Runs `otelscale serve <args> --help`: clap parses every argument before it reaches `--help`,
/// so this succeeds exactly when the server accepts the arguments.
fn server_accepts(args: &[String]) -> Output {
    otelscale_command().arg("serve").args(args).arg("--help").output().expect("run otelscale")
}

/// Whether `args` pass `--name`, as a switch or with a value.
fn passes_flag(args: &[String], name: &str) -> bool {
    args.iter().any(|arg| {
        arg.strip_prefix("--")
            .and_then(|rest| rest.strip_prefix(name))
            .is_some_and(|tail| tail.is_empty() || tail.starts_with('='))
    })
}

fn port_of_address(address: &str) -> u64 {
    address.rsplit(':').next().unwrap().parse().unwrap_or_else(|_| panic!("`{address}` does not end in a port"))
}

fn of_kind<'a>(documents: &'a [Value], kind: &str) -> Vec<&'a Value> {
    documents.iter().filter(|document| document["kind"].as_str() == Some(kind)).collect()
}

fn the_one<'a>(documents: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(documents, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
    found[0]
}

fn plain_manifests() -> Vec<Value> {
    yaml_file("kubernetes/otelscale.yaml")
}

fn container(deployment: &Value) -> &Value {
    let containers = deployment["spec"]["template"]["spec"]["containers"].as_sequence().unwrap();
    assert_eq!(containers.len(), 1);
    &containers[0]
}

fn string_list(value: &Value) -> Vec<String> {
    value.as_sequence().unwrap().iter().map(|item| item.as_str().unwrap().to_owned()).collect()
}

/// Container port numbers by name.
fn container_ports(container: &Value) -> BTreeMap<String, u64> {
    container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|port| (port["name"].as_str().unwrap().to_owned(), port["containerPort"].as_u64().unwrap()))
        .collect()
}

fn helm_renderer_available() -> bool {
    Command::new("python3").args(["-c", "import helm_python"]).output().is_ok_and(|output| output.status.success())
}

fn render_py(args: &[&str]) -> Output {
    Command::new("python3")
        .arg(deploy_path("helm/render.py"))
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("run deploy/helm/render.py")
}

/// The chart rendered by Helm's engine with the values file `deploy/<relative>`.
fn rendered_with(relative: &str) -> Vec<Value> {
    let path = deploy_path(relative);
    let rendered = render_py(&["-f", path.to_str().unwrap()]);
    assert!(rendered.status.success(), "render with {relative}: {}", String::from_utf8_lossy(&rendered.stderr));
    yaml_documents(&String::from_utf8(rendered.stdout).unwrap()).unwrap()
}

/// The files the Deployment's projected Secret volumes put into the container: absolute path
/// to (Secret name, key). Checks that those volumes are mounted read-only and whole (a
/// `subPath` mount is not updated when the Secret changes).
fn mounted_secret_files(deployment: &Value) -> BTreeMap<String, (String, String)> {
    let no_volumes = Vec::new();
    let volumes = deployment["spec"]["template"]["spec"]["volumes"].as_sequence().unwrap_or(&no_volumes);
    let mut files = BTreeMap::new();
    for mount in container(deployment)["volumeMounts"].as_sequence().into_iter().flatten() {
        let name = mount["name"].as_str().unwrap();
        let volume = volumes
            .iter()
            .find(|volume| volume["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("volumeMount {name} without a volume"));
        let Some(sources) = volume["projected"]["sources"].as_sequence() else { continue };
        assert_eq!(mount["readOnly"].as_bool(), Some(true), "{name} is mounted read-only");
        assert!(mount.get("subPath").is_none(), "{name}: a subPath mount does not follow Secret updates");
        let dir = mount["mountPath"].as_str().unwrap();
        for source in sources {
            let secret = source["secret"]["name"].as_str().unwrap_or_else(|| panic!("{name}: not a Secret source"));
            for item in source["secret"]["items"].as_sequence().unwrap() {
                let path = format!("{dir}/{}", item["path"].as_str().unwrap());
                let key = item["key"].as_str().unwrap().to_owned();
                assert!(files.insert(path.clone(), (secret.to_owned(), key)).is_none(), "{path} is projected twice");
            }
        }
    }
    files
}

/// The value of `--<flag>=<value>` in `args`.
fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let prefix = format!("--{flag}=");
    args.iter().find_map(|arg| arg.strip_prefix(prefix.as_str()))
}

#[test]
fn every_yaml_and_json_file_under_deploy_parses() {
    let mut parsed = 0;
    let mut templates = 0;
    for path in files_with_extension("", &["yaml", "yml"]) {
        let text = std::fs::read_to_string(&path).unwrap();
        let is_template = path.components().any(|part| part.as_os_str() == "templates");
        if is_template && text.contains("{{") {
            // Go templates: YAML only once rendered (checked through render.py below).
            templates += 1;
            continue;
        }
        let documents = yaml_documents(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        assert!(!documents.is_empty(), "{} holds no document", path.display());
        parsed += 1;
    }
    for path in files_with_extension("", &["json"]) {
        let text = std::fs::read_to_string(&path).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        parsed += 1;
    }
    assert!(parsed >= 14, "only {parsed} files parsed");
    assert!(templates >= 6, "only {templates} chart templates found");
}

#[test]
fn every_serve_flag_is_a_chart_value_with_the_servers_default() {
    let flags = serve_flags();
    let config = chart_config(&chart_values());
    let flag_names: BTreeSet<&str> = flags.iter().map(|flag| flag.name.as_str()).collect();
    let config_keys: BTreeSet<&str> = config.keys().map(String::as_str).collect();
    let missing: Vec<_> = flag_names.difference(&config_keys).collect();
    let unknown: Vec<_> = config_keys.difference(&flag_names).collect();
    assert!(missing.is_empty(), "flags of `otelscale serve` without a key in values.yaml's config: {missing:?}");
    assert!(unknown.is_empty(), "config keys in values.yaml that are not flags of `otelscale serve`: {unknown:?}");

    for flag in &flags {
        let value = &config[&flag.name];
        match (&flag.default, flag.takes_value) {
            (_, false) => assert_eq!(value, &Value::Bool(false), "switch --{} defaults to false", flag.name),
            (Some(default), true) => assert_eq!(
                scalar_text(value).as_deref(),
                Some(default.as_str()),
                "values.yaml config.{} is not the server's default",
                flag.name
            ),
            (None, true) => assert!(value.is_null(), "--{} has no default: config.{0} should be null", flag.name),
        }
    }

    let schema: serde_json::Value = serde_json::from_str(&read("helm/otelscale/values.schema.json")).unwrap();
    let config_schema = &schema["properties"]["config"];
    assert_eq!(
        config_schema["additionalProperties"],
        serde_json::Value::Bool(false),
        "the schema refuses unknown keys"
    );
    let schema_keys: BTreeSet<&str> =
        config_schema["properties"].as_object().expect("config properties").keys().map(String::as_str).collect();
    assert_eq!(schema_keys, flag_names, "values.schema.json describes exactly the flags");
}

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

#[test]
fn helm_renders_the_committed_manifests_and_every_option() {
    if !helm_renderer_available() {
        eprintln!("helm-python-sdk is not installed (pip install helm-python-sdk): Helm rendering not checked");
        return;
    }
    let lint = render_py(&["--lint"]);
    assert!(lint.status.success(), "helm lint: {}", String::from_utf8_lossy(&lint.stderr));
    let check = render_py(&["--check"]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));

    let documents = rendered_with("helm/otelscale/ci/full-values.yaml");
    let values = merged(&chart_values(), &yaml_file("helm/otelscale/ci/full-values.yaml")[0]);
    let deployment = the_one(&documents, "Deployment");
    let args = string_list(&container(deployment)["args"]);
    assert_eq!(args, expected_args(&values));
    for flag in serve_flags() {
        assert!(passes_flag(&args, &flag.name), "--{} not rendered with ci/full-values.yaml: {args:?}", flag.name);
    }
    let output = server_accepts(&args);
    assert!(
        output.status.success(),
        "otelscale refuses the rendered arguments: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Container ports follow the configured addresses; the Service keeps its own port numbers.
    let config = chart_config(&values);
    let expected_ports: BTreeMap<String, u64> = ADDRESS_FLAGS
        .iter()
        .map(|(name, flag)| (name.to_string(), port_of_address(config[*flag].as_str().unwrap())))
        .collect();
    assert_eq!(container_ports(container(deployment)), expected_ports);
    let claim = the_one(&documents, "PersistentVolumeClaim");
    let volumes = deployment["spec"]["template"]["spec"]["volumes"].as_sequence().unwrap();
    let snapshots =
        volumes.iter().find(|volume| volume["name"].as_str() == Some("snapshots")).expect("snapshot volume");
    assert_eq!(snapshots["persistentVolumeClaim"]["claimName"], claim["metadata"]["name"]);
    assert_eq!(the_one(&documents, "PodDisruptionBudget")["spec"]["minAvailable"].as_u64(), Some(1));
    let endpoint = &the_one(&documents, "ServiceMonitor")["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"].as_str(), Some("admin"));
    assert_eq!(endpoint["path"].as_str(), Some("/metrics"));
    // The TLS paths set in config name files the chart mounts.
    let mounted = mounted_secret_files(deployment);
    for port in TLS_PORTS {
        for suffix in ["cert", "key", "client-ca"] {
            let path = flag_value(&args, &format!("{port}-tls-{suffix}")).unwrap();
            assert!(mounted.contains_key(path), "--{port}-tls-{suffix}={path} is not a mounted file: {mounted:?}");
        }
    }

    // OTLP/HTTP with TLS on the io_uring back-end is refused at render time, as the server would.
    let conflict = std::env::temp_dir().join(format!("otelscale-deploy-test-uring-{}.yaml", std::process::id()));
    std::fs::write(&conflict, "config:\n  io-uring: \"on\"\ntls:\n  otlp-http:\n    enabled: true\n").unwrap();
    let refused = render_py(&["-f", conflict.to_str().unwrap()]);
    let _ = std::fs::remove_file(&conflict);
    assert!(!refused.status.success(), "io-uring on with OTLP/HTTP TLS rendered");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("io-uring"));

    // The schema refuses a key that is not a flag.
    let typo = std::env::temp_dir().join(format!("otelscale-deploy-test-{}.yaml", std::process::id()));
    std::fs::write(&typo, "config:\n  max-seris: 5\n").unwrap();
    let refused = render_py(&["-f", typo.to_str().unwrap()]);
    let _ = std::fs::remove_file(&typo);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("max-seris"));
}

#[test]
fn helm_mounts_each_tls_secret_and_points_the_tls_flags_at_its_files() {
    if !helm_renderer_available() {
        eprintln!("helm-python-sdk is not installed (pip install helm-python-sdk): TLS rendering not checked");
        return;
    }
    let values_file = "helm/otelscale/ci/tls-values.yaml";
    let values = merged(&chart_values(), &yaml_file(values_file)[0]);
    // The TLS paths come from the `tls` section alone.
    let unset = chart_config(&values)
        .iter()
        .filter(|(flag, _)| TLS_PORTS.iter().any(|port| flag.starts_with(&format!("{port}-tls-"))))
        .all(|(_, value)| value.is_null());
    assert!(unset, "{values_file} sets TLS paths in config");
    let documents = rendered_with(values_file);
    let deployment = the_one(&documents, "Deployment");
    let args = string_list(&container(deployment)["args"]);
    assert_eq!(args, expected_args(&values));
    let output = server_accepts(&args);
    assert!(output.status.success(), "otelscale refuses {args:?}: {}", String::from_utf8_lossy(&output.stderr));

    // (port, Secret with tls.crt and tls.key, Secret and key of the client CA if any)
    type SecretKey = (&'static str, &'static str);
    let expected: [(&str, &str, Option<SecretKey>); 3] = [
        ("otlp-grpc", "otelscale-otlp-grpc-tls", None),
        ("otlp-http", "otelscale-otlp-http-cert", Some(("otelscale-otlp-http-cert", "ca.crt"))),
        ("scaler", "otelscale-scaler-tls", Some(("otelscale-scaler-client-ca", "ca.crt"))),
    ];
    let mounted = mounted_secret_files(deployment);
    let mut named_by_flags = BTreeSet::new();
    for (port, secret, client_ca) in expected {
        let dir = format!("/etc/otelscale/tls/{port}/");
        let mut check = |suffix: &str, source: Option<(&str, &str)>| {
            let flag = format!("{port}-tls-{suffix}");
            match (flag_value(&args, &flag), source) {
                (Some(path), Some((secret, key))) => {
                    assert!(path.starts_with(&dir), "--{flag}={path} is not under {dir}");
                    let found = mounted.get(path).unwrap_or_else(|| panic!("--{flag}={path} is not mounted"));
                    assert_eq!((found.0.as_str(), found.1.as_str()), (secret, key), "--{flag}");
                    named_by_flags.insert(path.to_owned());
                }
                (None, None) => {}
                (path, source) => panic!("--{flag}: rendered {path:?}, expected a file from {source:?}"),
            }
        };
        check("cert", Some((secret, "tls.crt")));
        check("key", Some((secret, "tls.key")));
        check("client-ca", client_ca);
    }
    assert_eq!(mounted.keys().cloned().collect::<BTreeSet<_>>(), named_by_flags, "every mounted file is used");

    // Probes and scraping stay on the plaintext admin port.
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let http_get = &container(deployment)[probe]["httpGet"];
        assert_eq!(http_get["port"].as_str(), Some("admin"), "{probe}");
        assert!(http_get["scheme"].as_str().is_none_or(|scheme| scheme == "HTTP"), "{probe}");
    }
    let service = the_one(&documents, "Service");
    let otlp_http = service["spec"]["ports"].as_sequence().unwrap().iter().find(|port| port["name"] == "otlp-http");
    assert_eq!(otlp_http.unwrap()["appProtocol"].as_str(), Some("https"));
}

/// Writes `files` (name to contents) into `dir` the way the kubelet fills a Secret volume:
/// each name is a symlink into `..data`, itself a symlink to a directory per version, and an
/// update swaps `..data` atomically to a new version.
fn kubelet_write_volume(dir: &Path, version: u32, files: &BTreeMap<String, String>) {
    std::fs::create_dir_all(dir).unwrap();
    let version_dir = format!("..version_{version}");
    std::fs::create_dir(dir.join(&version_dir)).unwrap();
    for (name, contents) in files {
        std::fs::write(dir.join(&version_dir).join(name), contents).unwrap();
    }
    let previous = std::fs::read_link(dir.join("..data")).ok();
    std::os::unix::fs::symlink(&version_dir, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    for name in files.keys() {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &link).unwrap();
        }
    }
    if let Some(previous) = previous {
        std::fs::remove_dir_all(dir.join(previous)).unwrap();
    }
}

/// A CA made at test time.
struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        TestCa { issuer: rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap() }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `names` and its key, as PEM.
    fn sign(&self, names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let cert = rcgen::CertificateParams::new(names).unwrap().signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// The Secrets of deploy/README.md's mTLS walk-through, by name: key to PEM.
type Secrets = BTreeMap<String, BTreeMap<String, String>>;

fn secret(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    entries.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect()
}

/// What the kubelet would put in each projected TLS volume of `deployment`, given `secrets`,
/// written under `root` (the container's `/`). Panics when a Secret or key does not exist,
/// as the pod would stay in ContainerCreating.
fn mount_tls_volumes(deployment: &Value, secrets: &Secrets, root: &Path, version: u32) {
    let mut by_dir: BTreeMap<PathBuf, BTreeMap<String, String>> = BTreeMap::new();
    for (path, (secret, key)) in mounted_secret_files(deployment) {
        let contents = secrets
            .get(&secret)
            .and_then(|data| data.get(&key))
            .unwrap_or_else(|| panic!("{path}: Secret {secret} has no key {key}"));
        let path = Path::new(&path);
        let dir = root.join(path.parent().unwrap().strip_prefix("/").unwrap());
        by_dir.entry(dir).or_default().insert(path.file_name().unwrap().to_str().unwrap().to_owned(), contents.clone());
    }
    for (dir, files) in by_dir {
        kubelet_write_volume(&dir, version, &files);
    }
}

/// A gRPC channel to the scaler set up as KEDA sets up its client from the TriggerAuthentication
/// parameters (`caCert`, `tlsClientCert`, `tlsClientKey`), checking the server's name against
/// the host of `scalerAddress`.
async fn keda_channel(
    scaler: std::net::SocketAddr,
    scaler_host: &str,
    parameters: &BTreeMap<String, String>,
) -> Result<tonic::transport::Channel, String> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let mut tls = ClientTlsConfig::new().domain_name(scaler_host);
    if let Some(ca) = parameters.get("caCert") {
        tls = tls.ca_certificate(Certificate::from_pem(ca));
    }
    if let (Some(cert), Some(key)) = (parameters.get("tlsClientCert"), parameters.get("tlsClientKey")) {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    tonic::transport::Channel::from_shared(format!("https://{scaler}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|err| err.to_string())?
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(5))
        .connect()
        .await
        .map_err(|err| format!("{err:?}"))
}

#[tokio::test]
async fn example_tls_values_serve_keda_over_mtls_and_take_a_renewed_certificate() {
    if !helm_renderer_available() {
        eprintln!("helm-python-sdk is not installed (pip install helm-python-sdk): the mTLS example is not checked");
        return;
    }
    // The chart side: deploy/examples/values-tls.yaml, rendered.
    let documents = rendered_with("examples/values-tls.yaml");
    let deployment = the_one(&documents, "Deployment");
    let args = string_list(&container(deployment)["args"]);

    // The KEDA side: the TriggerAuthentication and ScaledObject of scaledobject-tls.yaml.
    let example = yaml_file("examples/scaledobject-tls.yaml");
    let scaled_object = the_one(&example, "ScaledObject");
    let trigger = &scaled_object["spec"]["triggers"][0];
    let metadata = trigger_metadata(trigger, "scaledobject-tls.yaml");
    let scaler_host = metadata["scalerAddress"].rsplit_once(':').unwrap().0.to_owned();
    let authentication = the_one(&example, "TriggerAuthentication");
    assert_eq!(trigger["authenticationRef"]["name"], authentication["metadata"]["name"]);
    let references: Vec<(String, String, String)> = authentication["spec"]["secretTargetRef"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|target| {
            let text = |key: &str| target[key].as_str().unwrap().to_owned();
            (text("parameter"), text("name"), text("key"))
        })
        .collect();

    // The certificates and Secrets of deploy/README.md: one CA signs the scaler's certificate
    // (for the Service host KEDA dials) and KEDA's client certificate.
    let ca = TestCa::new("otelscale CA");
    let (server_cert, server_key) = ca.sign(&[SERVICE_HOST, "otelscale.otelscale.svc.cluster.local"]);
    let (keda_cert, keda_key) = ca.sign(&["keda-operator"]);
    let mut secrets: Secrets = BTreeMap::from([
        ("otelscale-scaler-tls".to_owned(), secret(&[("tls.crt", &server_cert), ("tls.key", &server_key)])),
        ("otelscale-scaler-client-ca".to_owned(), secret(&[("ca.crt", &ca.pem())])),
        (
            "otelscale-keda-tls".to_owned(),
            secret(&[("ca.crt", &ca.pem()), ("tls.crt", &keda_cert), ("tls.key", &keda_key)]),
        ),
    ]);
    let readme = read("README.md");
    for name in secrets.keys() {
        assert!(readme.contains(name.as_str()), "deploy/README.md does not explain Secret {name}");
    }
    let keda_parameters = |secrets: &Secrets| -> BTreeMap<String, String> {
        references
            .iter()
            .map(|(parameter, name, key)| {
                let value = secrets.get(name).and_then(|data| data.get(key));
                (parameter.clone(), value.unwrap_or_else(|| panic!("{parameter}: no Secret {name} key {key}")).clone())
            })
            .collect()
    };

    // The kubelet mounts the Secrets; the server starts with the rendered flags, their paths
    // moved under a temporary root.
    let root = tempfile::tempdir().unwrap();
    mount_tls_volumes(deployment, &secrets, root.path(), 1);
    let mounted = mounted_secret_files(deployment);
    let local_args: Vec<String> = args
        .iter()
        .map(|arg| match arg.split_once('=') {
            Some((flag, path)) if mounted.contains_key(path) => {
                format!("{flag}={}", root.path().join(path.trim_start_matches('/')).display())
            }
            _ => arg.clone(),
        })
        .collect();
    #[derive(clap::Parser)]
    struct Serve {
        #[command(flatten)]
        serve: otelscale::config::ServeArgs,
    }
    let parsed = <Serve as clap::Parser>::try_parse_from(std::iter::once("otelscale".to_owned()).chain(local_args))
        .unwrap_or_else(|err| panic!("rendered arguments: {err}"));
    let tls = parsed.serve.validate().expect("rendered configuration").tls;
    assert!(tls.otlp_grpc.is_none() && tls.otlp_http.is_none(), "only the scaler port has TLS");
    assert!(tls.scaler.as_ref().is_some_and(|files| files.client_ca.is_some()), "the scaler port has mTLS");
    let server = TestServer::start_with(|config| {
        config.tls = tls;
        config.tls.reload_interval = std::time::Duration::from_millis(100);
    })
    .await;

    let get_metric_spec = |parameters: BTreeMap<String, String>| {
        let request = ScaledObjectRef {
            name: scaled_object["metadata"]["name"].as_str().unwrap().to_owned(),
            namespace: scaled_object["metadata"]["namespace"].as_str().unwrap().to_owned(),
            scaler_metadata: metadata.clone(),
        };
        let (scaler, scaler_host) = (server.scaler, scaler_host.clone());
        async move {
            let channel = keda_channel(scaler, &scaler_host, &parameters).await?;
            let mut client = otelscale::scaler::proto::external_scaler_client::ExternalScalerClient::new(channel);
            client.get_metric_spec(request).await.map(|_| ()).map_err(|status| status.to_string())
        }
    };

    // KEDA, configured from the example's TriggerAuthentication, is served.
    get_metric_spec(keda_parameters(&secrets)).await.expect("KEDA's mTLS call");
    // Without a client certificate the scaler refuses.
    let mut server_only = keda_parameters(&secrets);
    server_only.retain(|parameter, _| parameter == "caCert");
    assert!(get_metric_spec(server_only).await.is_err(), "a call without a client certificate was served");

    // The scaler's certificate is renewed from another CA: the Secret changes, the kubelet swaps
    // the volume's files, and the running server takes the new certificate.
    let new_ca = TestCa::new("otelscale CA 2");
    let (new_cert, new_key) = new_ca.sign(&[SERVICE_HOST]);
    let mut renewed = secrets.clone();
    renewed.get_mut("otelscale-keda-tls").unwrap().insert("ca.crt".to_owned(), new_ca.pem());
    assert!(get_metric_spec(keda_parameters(&renewed)).await.is_err(), "the new CA was trusted before the renewal");
    secrets.insert("otelscale-scaler-tls".to_owned(), secret(&[("tls.crt", &new_cert), ("tls.key", &new_key)]));
    mount_tls_volumes(deployment, &secrets, root.path(), 2);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match get_metric_spec(keda_parameters(&renewed)).await {
            Ok(()) => break,
            Err(err) if std::time::Instant::now() > deadline => panic!("the renewed certificate was not taken: {err}"),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    server.stop().await;
}

/// KEDA passes trigger metadata as a map of strings.
fn trigger_metadata(trigger: &Value, context: &str) -> HashMap<String, String> {
    trigger["metadata"]
        .as_mapping()
        .unwrap_or_else(|| panic!("{context}: trigger without metadata"))
        .iter()
        .map(|(key, value)| {
            let key = key.as_str().unwrap().to_owned();
            let value = value.as_str().unwrap_or_else(|| panic!("{context}: metadata `{key}` must be a string"));
            (key, value.to_owned())
        })
        .collect()
}

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
