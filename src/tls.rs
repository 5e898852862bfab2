//! TLS for the client-facing ports (OTLP/gRPC, OTLP/HTTP, KEDA scaler), with rustls.
//!
//! Each TLS port has a [`ReloadingTls`]: the current `rustls::ServerConfig`, rebuilt from the
//! certificate, key and optional client CA files whenever one of them changes on disk (checked
//! every `--tls-reload-interval`). A file that does not load keeps the previous configuration in
//! service, with a warning naming the file; connections already open keep the certificate they
//! were accepted with. [`ReloadingTls::accept`] handshakes with its own deadline
//! (`--tls-handshake-timeout`), inside the connection's task (`server/port.rs`,
//! `ingest/http1/epoll.rs`), so a slow or silent client cannot hold up an accept loop; the
//! handshaking connection is registered (counted, evictable, closed at shutdown) like any other,
//! and after the handshake the same connection deadlines apply as on a plaintext port.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::TlsFiles;

/// ALPN for the gRPC ports: gRPC clients (KEDA's included) insist on `h2`.
pub const ALPN_GRPC: &[&[u8]] = &[b"h2"];
/// ALPN for OTLP/HTTP (HTTP/1.1 only).
pub const ALPN_HTTP1: &[&[u8]] = &[b"http/1.1"];

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} {path}: {problem}")]
    File { what: &'static str, path: PathBuf, problem: String },
    #[error("certificate {cert} and key {key} do not make a server identity: {source}")]
    Identity { cert: PathBuf, key: PathBuf, source: rustls::Error },
    #[error("client CA {path}: {problem}")]
    ClientCa { path: PathBuf, problem: String },
}

fn file_error(what: &'static str, path: &Path, problem: impl ToString) -> TlsError {
    TlsError::File { what, path: path.to_path_buf(), problem: problem.to_string() }
}

/// When and how a file last changed, to notice a new certificate.
type FileStamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> FileStamp {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

/// The TLS configuration of one port, reloaded from its files when they change.
pub struct ReloadingTls {
    port: &'static str,
    files: TlsFiles,
    alpn: &'static [&'static [u8]],
    current: RwLock<Arc<ServerConfig>>,
    stamps: Mutex<Vec<FileStamp>>,
}

impl ReloadingTls {
    /// Loads the files once; an error here stops start-up.
    pub fn load(port: &'static str, files: TlsFiles, alpn: &'static [&'static [u8]]) -> Result<Arc<Self>, TlsError> {
        let stamps = file_stamps(&files);
        let config = build_server_config(&files, alpn)?;
        tracing::info!(
            port,
            cert = %files.cert.display(),
            mutual = files.client_ca.is_some(),
            "TLS enabled"
        );
        Ok(Arc::new(ReloadingTls {
            port,
            files,
            alpn,
            current: RwLock::new(Arc::new(config)),
            stamps: Mutex::new(stamps),
        }))
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner())))
    }

    /// Rebuilds the configuration if a file changed since the last look. Returns whether a new
    /// configuration is in service.
    pub fn reload_if_changed(&self) -> bool {
        let stamps = file_stamps(&self.files);
        {
            let mut seen = self.stamps.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if *seen == stamps {
                return false;
            }
            // Remember this state even if it fails to load: a file being replaced changes
            // again when it is complete, and one broken state is reported once.
            *seen = stamps;
        }
        match build_server_config(&self.files, self.alpn) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(config);
                tracing::info!(port = self.port, cert = %self.files.cert.display(), "TLS certificate reloaded");
                true
            }
            Err(err) => {
                tracing::warn!(port = self.port, error = %err, "TLS files changed but do not load; the previous certificate stays in use");
                false
            }
        }
    }

    /// Checks the files every `interval` until `cancel` fires.
    pub fn watch(self: &Arc<Self>, interval: Duration, cancel: CancellationToken) {
        let tls = Arc::clone(self);
        tokio::spawn(crate::clock::every(interval, cancel, async move || {
            let reloader = Arc::clone(&tls);
            // File reads and key parsing are blocking work.
            let _ = tokio::task::spawn_blocking(move || reloader.reload_if_changed()).await;
        }));
    }

    /// Handshakes `stream` within `timeout`. `None` (logged at debug) when the client fails it.
    pub async fn accept<S>(&self, stream: S, timeout: Duration) -> Option<tokio_rustls::server::TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match tokio::time::timeout(timeout, self.acceptor().accept(stream)).await {
            Ok(Ok(tls_stream)) => Some(tls_stream),
            Ok(Err(err)) => {
                tracing::debug!(port = self.port, error = %err, "TLS handshake failed");
                None
            }
            Err(_elapsed) => {
                tracing::debug!(port = self.port, timeout_ms = timeout.as_millis() as u64, "TLS handshake timed out");
                None
            }
        }
    }
}

fn file_stamps(files: &TlsFiles) -> Vec<FileStamp> {
    [Some(&files.cert), Some(&files.key), files.client_ca.as_ref()]
        .into_iter()
        .flatten()
        .map(|path| stamp(path))
        .collect()
}

fn build_server_config(files: &TlsFiles, alpn: &[&[u8]]) -> Result<ServerConfig, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|err| file_error("certificate", &files.cert, err))?
        .collect::<Result<_, _>>()
        .map_err(|err| file_error("certificate", &files.cert, err))?;
    if certs.is_empty() {
        return Err(file_error("certificate", &files.cert, "no PEM certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|err| file_error("key", &files.key, err))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions");
    let builder = match &files.client_ca {
        Some(path) => {
            let client_ca_error = |problem: String| TlsError::ClientCa { path: path.clone(), problem };
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).map_err(|err| client_ca_error(err.to_string()))? {
                roots
                    .add(cert.map_err(|err| client_ca_error(err.to_string()))?)
                    .map_err(|err| client_ca_error(err.to_string()))?;
            }
            if roots.is_empty() {
                return Err(client_ca_error("no PEM certificate in the file".into()));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|err| client_ca_error(err.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|source| TlsError::Identity {
        cert: files.cert.clone(),
        key: files.key.clone(),
        source,
    })?;
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(config)
}
