//! TLS and mTLS on the three client ports, with certificates made at test time (rcgen): real
//! tonic clients for gRPC, a rustls client for OTLP/HTTP; acceptance, rejection, and a
//! certificate replaced on disk while the server runs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use otelscale::config::{Config, TlsFiles};
use prost::Message;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::common::*;

const TRIGGER: &[(&str, &str)] = &[("metricQuery", "avg(gpu_util{job=training})"), ("targetValue", "50")];

/// A CA and the PEM files it signed, in a temp dir.
struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
    ca_pem: String,
}

impl Authority {
    fn new(name: &str) -> Authority {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let ca_pem = issuer.pem();
        Authority { issuer, ca_pem }
    }

    /// A leaf certificate and key (PEM) for `names`.
    fn leaf(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(names.iter().map(|name| name.to_string()).collect::<Vec<_>>()).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

struct Pki {
    dir: tempfile::TempDir,
    ca: Authority,
    other_ca: Authority,
}

impl Pki {
    fn new() -> Pki {
        Pki {
            dir: tempfile::tempdir().unwrap(),
            ca: Authority::new("otelscale test CA"),
            other_ca: Authority::new("rogue CA"),
        }
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// Server certificate files signed by `ca`, and the client CA file when `mutual`.
    fn server_files(&self, ca: &Authority, mutual: bool) -> TlsFiles {
        let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"]);
        TlsFiles {
            cert: self.write("server.pem", &cert),
            key: self.write("server.key", &key),
            client_ca: mutual.then(|| self.write("clients-ca.pem", &self.ca.ca_pem)),
        }
    }
}

async fn grpc_channel(
    addr: std::net::SocketAddr,
    trust: &Authority,
    identity: Option<(String, String)>,
) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&trust.ca_pem)).domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|err| err.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|err| format!("{err:?}"))
}

/// GetMetricSpec over TLS; `Err` when the connection or the call fails.
async fn scaler_call(server: &TestServer, trust: &Authority, identity: Option<(String, String)>) -> Result<(), String> {
    let channel = grpc_channel(server.scaler, trust, identity).await?;
    let mut client = otelscale::scaler::proto::external_scaler_client::ExternalScalerClient::new(channel);
    client.get_metric_spec(scaled_object(TRIGGER)).await.map(|_| ()).map_err(|status| status.to_string())
}

async fn start_tls(adjust: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::start_with(|config| {
        config.tls.reload_interval = Duration::from_millis(100);
        adjust(config);
    })
    .await
}

#[tokio::test]
async fn scaler_port_serves_tls_and_refuses_plaintext_and_untrusted_certificates() {
    let pki = Pki::new();
    let files = pki.server_files(&pki.ca, false);
    let server = start_tls(|config| config.tls.scaler = Some(files)).await;
    scaler_call(&server, &pki.ca, None).await.unwrap();
    // A client that trusts another CA does not accept the server's certificate.
    assert!(scaler_call(&server, &pki.other_ca, None).await.is_err());
    // A plaintext gRPC client gets no answer from the TLS port.
    let plaintext = tokio::time::timeout(Duration::from_secs(5), async {
        let mut client = server.scaler_client().await;
        client.get_metric_spec(scaled_object(TRIGGER)).await
    })
    .await;
    assert!(!matches!(plaintext, Ok(Ok(_))), "a plaintext call succeeded");
    // The other ports stay plaintext.
    assert!(reqwest::get(server.admin_url("/readyz")).await.unwrap().status().is_success());
    server.stop().await;
}

#[tokio::test]
async fn scaler_port_with_a_client_ca_requires_a_client_certificate_it_signed() {
    let pki = Pki::new();
    let files = pki.server_files(&pki.ca, true);
    let server = start_tls(|config| config.tls.scaler = Some(files)).await;
    // KEDA's tlsClientCert and tlsClientKey: a certificate from the trusted CA.
    scaler_call(&server, &pki.ca, Some(pki.ca.leaf(&["keda-operator"]))).await.unwrap();
    assert!(scaler_call(&server, &pki.ca, None).await.is_err(), "no client certificate");
    assert!(scaler_call(&server, &pki.ca, Some(pki.other_ca.leaf(&["intruder"]))).await.is_err(), "rogue client");
    server.stop().await;
}

#[tokio::test]
async fn keda_tls_metadata_keys_are_accepted_by_the_scaler() {
    // KEDA passes the trigger's metadata through; its TLS keys must not upset the parser.
    let server = TestServer::start().await;
    let mut client = server.scaler_client().await;
    let mut metadata = TRIGGER.to_vec();
    metadata.extend([("caCert", "-----BEGIN CERTIFICATE-----"), ("tlsClientCert", "x"), ("tlsClientKey", "y")]);
    client.get_metric_spec(scaled_object(&metadata)).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn otlp_grpc_port_with_mtls_accepts_trusted_clients_only() {
    let pki = Pki::new();
    let files = pki.server_files(&pki.ca, true);
    let server = start_tls(|config| config.tls.otlp_grpc = Some(files)).await;
    let export = |identity| async {
        let channel = grpc_channel(server.otlp_grpc, &pki.ca, identity).await?;
        let mut client =
            opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient::new(
                channel,
            );
        let points = vec![number_point(&[("gpu", "0")], now_unix_nano(), 42.0)];
        client.export(request(&[("job", "training")], vec![gauge("gpu_util", points)])).await.map_err(|s| s.to_string())
    };
    export(Some(pki.ca.leaf(&["collector"]))).await.unwrap();
    assert!(export(None).await.is_err());
    assert!(export(Some(pki.other_ca.leaf(&["intruder"]))).await.is_err());
    assert_eq!(server.get_metric_value(TRIGGER).await.unwrap(), 42.0);
    server.stop().await;
}

/// POSTs one OTLP/HTTP protobuf request over TLS and returns the status line.
async fn https_export(
    addr: std::net::SocketAddr,
    trust: &Authority,
    identity: Option<(String, String)>,
) -> Result<String, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(trust.ca_pem.as_bytes()).unwrap()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|err| err.to_string())?;
    let mut tls =
        connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.map_err(|err| err.to_string())?;
    let points = vec![number_point(&[("gpu", "1")], now_unix_nano(), 7.0)];
    let body = request(&[("job", "training")], vec![gauge("gpu_util", points)]).encode_to_vec();
    let head = format!(
        "POST /v1/metrics HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.map_err(|err| err.to_string())?;
    tls.write_all(&body).await.map_err(|err| err.to_string())?;
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    answer.lines().next().map(str::to_owned).filter(|line| !line.is_empty()).ok_or_else(|| "no answer".to_owned())
}

#[tokio::test]
async fn otlp_http_port_with_mtls_accepts_trusted_clients_only() {
    let pki = Pki::new();
    let files = pki.server_files(&pki.ca, true);
    let server = start_tls(|config| config.tls.otlp_http = Some(files)).await;
    let status = https_export(server.otlp_http, &pki.ca, Some(pki.ca.leaf(&["collector"]))).await.unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(https_export(server.otlp_http, &pki.ca, None).await.is_err());
    assert!(https_export(server.otlp_http, &pki.ca, Some(pki.other_ca.leaf(&["intruder"]))).await.is_err());
    // Plain HTTP on the TLS port is not served.
    let plain = reqwest::Client::new()
        .post(server.http_url("/v1/metrics"))
        .header("content-type", "application/x-protobuf")
        .body(Vec::new())
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    assert_eq!(server.get_metric_value(TRIGGER).await.unwrap(), 7.0);
    server.stop().await;
}

#[tokio::test]
async fn a_certificate_replaced_on_disk_is_served_without_a_restart() {
    let pki = Pki::new();
    let files = pki.server_files(&pki.ca, false);
    let server = start_tls(|config| config.tls.scaler = Some(files)).await;
    scaler_call(&server, &pki.ca, None).await.unwrap();
    assert!(scaler_call(&server, &pki.other_ca, None).await.is_err());

    // A broken file is ignored: the old certificate stays in service. The pause gives the
    // reloader (every 100 ms) a chance to see the broken file; if it has not yet, the old
    // certificate is served all the more, so the check below holds on a slow machine too.
    std::fs::write(pki.dir.path().join("server.pem"), "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    scaler_call(&server, &pki.ca, None).await.unwrap();

    // A certificate from the other CA replaces it (key first, then certificate, as a rotation does).
    let (cert, key) = pki.other_ca.leaf(&["localhost"]);
    write_atomically(&pki.dir.path().join("server.key"), &key);
    write_atomically(&pki.dir.path().join("server.pem"), &cert);
    let deadline = Instant::now() + WAIT_DEADLINE;
    let mut switched = false;
    while !switched && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        switched = scaler_call(&server, &pki.other_ca, None).await.is_ok();
    }
    assert!(switched, "the new certificate was not served within {WAIT_DEADLINE:?}");
    assert!(scaler_call(&server, &pki.ca, None).await.is_err());
    server.stop().await;
}

fn write_atomically(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

#[tokio::test]
async fn unusable_certificate_files_stop_start_up_with_the_file_named() {
    let pki = Pki::new();
    let mut files = pki.server_files(&pki.ca, false);
    files.key = pki.write("empty.key", "");
    let mut config = Config::default();
    config.tls.otlp_grpc = Some(files);
    let bind = || async { tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap() };
    let listeners = otelscale::server::Listeners {
        otlp_grpc: bind().await,
        otlp_http: bind().await,
        scaler: bind().await,
        admin: bind().await,
    };
    let err = otelscale::server::run(listeners, config, std::future::pending()).await.unwrap_err();
    let message = err.to_string();
    assert!(message.contains("OTLP/gRPC") && message.contains("empty.key"), "{message}");
}
