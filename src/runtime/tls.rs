//! A TLS server certificate read from PEM files, reloaded when the files
//! change (cert-manager, or the kubelet refreshing a mounted Secret, rotates
//! them in place). Shared by the registry API and the admission webhook.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use axum_server::tls_rustls::RustlsConfig;
use tracing::{info, warn};

/// How often the certificate files are checked for a change.
const RELOAD_CHECK: Duration = Duration::from_secs(5);

/// Why a certificate and key could not be loaded (names the file; never the key).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// The rustls configuration of a certificate chain and key in PEM files.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .map_err(|e| TlsError(format!("{}: {e}", cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError(format!("{}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError(e.to_string()))?;
    Ok(Arc::new(config))
}

/// The certificate and key in `cert` and `key`, kept current: a change to
/// either file is loaded within [`RELOAD_CHECK`] (`what` names the server in
/// the log lines).
pub fn watched(what: &'static str, cert: &Path, key: &Path) -> Result<RustlsConfig, TlsError> {
    let config = RustlsConfig::from_config(server_config(cert, key)?);
    tokio::spawn(reload_on_change(what, config.clone(), cert.to_path_buf(), key.to_path_buf()));
    Ok(config)
}

/// What identifies a version of a file: its modification time and length.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Reloads the certificate and key whenever either file changes. A pair that
/// does not load (half-written, mismatched) keeps the one in use.
async fn reload_on_change(what: &'static str, config: RustlsConfig, cert: PathBuf, key: PathBuf) {
    let mut seen = (stamp(&cert), stamp(&key));
    let mut ticks = tokio::time::interval(RELOAD_CHECK);
    loop {
        ticks.tick().await;
        let now = (stamp(&cert), stamp(&key));
        if now == seen {
            continue;
        }
        match server_config(&cert, &key) {
            Ok(loaded) => {
                config.reload_from_config(loaded);
                seen = now;
                info!(server = what, cert = %cert.display(), "reloaded the TLS certificate");
            }
            Err(e) => {
                warn!(server = what, error = %e, "the new TLS certificate does not load; keeping the current one")
            }
        }
    }
}
