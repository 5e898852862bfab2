//! The chart rendered by Helm's engine through `deploy/helm/render.py` (the `helm-python-sdk`
//! package): lint, the committed manifests are what the chart renders, and every option of
//! `ci/full-values.yaml` renders into arguments the server accepts.

use std::collections::BTreeMap;
use std::process::{Command, Output};

use serde_yaml::Value;

use crate::chart_values::{chart_config, chart_values, expected_args, merged};
use crate::deploy_files::{
    container, container_ports, deploy_path, flag_value, mounted_secret_files, repo_root, string_list, the_one,
    yaml_documents, yaml_file,
};
use crate::serve_flags::{passes_flag, port_of_address, serve_flags, server_accepts, ADDRESS_FLAGS, TLS_PORTS};

/// Whether the `python3` on PATH imports `helm_python` (the `helm-python-sdk` package) for
/// `deploy/helm/render.py`. Without it a Helm test skips, saying so, except in CI (see
/// [`running_in_ci`]), where the Helm checks must run: there a missing renderer fails the test.
pub(crate) fn helm_renderer_available() -> bool {
    let probe = Command::new("python3").args(["-c", "import helm_python"]).output();
    let problem = match probe {
        Ok(output) if output.status.success() => return true,
        Ok(output) => String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        Err(err) => format!("python3 does not run: {err}"),
    };
    assert!(
        !running_in_ci(),
        "CI is set, and the Helm checks must run there, but `python3 -c 'import helm_python'` fails: {problem}\n\
         .ci/run installs helm-python-sdk into target/ci-venv and puts that first on PATH; elsewhere \
         `pip install helm-python-sdk` (or leave CI unset to skip the Helm checks)"
    );
    false
}

/// `CI` is set to anything but empty, `0` or `false`: `.ci/run` exports `CI=1`, CI services set
/// `CI=true`.
fn running_in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| !value.is_empty() && value != "0" && value != "false")
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
pub(crate) fn rendered_with(relative: &str) -> Vec<Value> {
    let path = deploy_path(relative);
    let rendered = render_py(&["-f", path.to_str().unwrap()]);
    assert!(rendered.status.success(), "render with {relative}: {}", String::from_utf8_lossy(&rendered.stderr));
    yaml_documents(&String::from_utf8(rendered.stdout).unwrap()).unwrap()
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
    // The NetworkPolicy admits the Collector to the OTLP ports and KEDA to the scaler port, by
    // the container ports' names; `adminFrom: []` admits no pod to the admin port.
    let policy = &the_one(&documents, "NetworkPolicy")["spec"];
    assert_eq!(policy["podSelector"]["matchLabels"], deployment["spec"]["selector"]["matchLabels"]);
    let rules = policy["ingress"].as_sequence().unwrap();
    let ports_of = |rule: &Value| -> Vec<String> {
        rule["ports"].as_sequence().unwrap().iter().map(|port| port["port"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert_eq!(ports_of(&rules[0]), ["otlp-grpc", "otlp-http"]);
    assert_eq!(rules[0]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"], "opentelemetry-collector");
    assert_eq!(ports_of(&rules[1]), ["scaler"]);
    assert_eq!(rules[1]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"], "keda");
    let named_ports = container_ports(container(deployment));
    for rule in rules {
        for port in ports_of(rule) {
            assert!(named_ports.contains_key(&port), "the NetworkPolicy names port {port}, which the pod lacks");
        }
    }

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
