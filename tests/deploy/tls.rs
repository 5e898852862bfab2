//! TLS wiring: the chart mounts each port's TLS Secret and points the `--<port>-tls-*` flags at
//! its files; and the mTLS example of `deploy/examples/` and `deploy/README.md` served end to
//! end: Secrets written as the kubelet writes them, KEDA's client set up from the
//! TriggerAuthentication, and a renewed certificate taken by the running server.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use otelscale::scaler::proto::ScaledObjectRef;
use serde_yaml::Value;

use crate::chart_values::{chart_config, chart_values, expected_args, merged};
use crate::common::TestServer;
use crate::deploy_files::{
    container, flag_value, mounted_secret_files, read, string_list, the_one, trigger_metadata, yaml_file, SERVICE_HOST,
};
use crate::helm_rendering::{helm_renderer_available, rendered_with};
use crate::serve_flags::{server_accepts, TLS_PORTS};

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

pub(crate) fn secret(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
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
