//! TLS on the API listener (`tls_cert_file` / `tls_key_file`): rustls with the *ring*
//! provider, TLS 1.3 and 1.2 only, HTTP/1.1 by ALPN (the connection limits read HTTP/1 heads).
//!
//! The certificate is served through a resolver holding the current one, so a renewed
//! certificate is picked up without a restart and without dropping connections: the files'
//! modification times are checked every few seconds, and at once on SIGHUP. A pair that does
//! not load (half-written, key not matching) is logged and the previous one kept.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// How often the files are checked for a change.
const RELOAD_POLL: Duration = Duration::from_secs(5);

/// Loads a certificate chain (PEM, leaf first) and its private key (PEM: PKCS#8, PKCS#1 or
/// SEC1), checking that they belong together.
pub fn load(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading tls_cert_file {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing tls_cert_file {}", cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "tls_cert_file {} holds no certificate",
        cert.display()
    );
    let private = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading tls_key_file {}", key.display()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&private)
        .with_context(|| format!("tls_key_file {}: unsupported key", key.display()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .context("tls_key_file does not belong to the certificate of tls_cert_file")?;
    Ok(certified)
}

/// Serves the current certificate; replaced by [`CertResolver::reload`].
#[derive(Debug)]
pub struct CertResolver {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<(Arc<CertifiedKey>, Option<FileTimes>)>,
}

/// Modification times of the certificate and key files.
type FileTimes = (SystemTime, SystemTime);

fn mtimes(cert: &Path, key: &Path) -> Option<FileTimes> {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(cert)?, m(key)?))
}

impl CertResolver {
    pub fn new(cert: &Path, key: &Path) -> anyhow::Result<Arc<CertResolver>> {
        let loaded = load(cert, key)?;
        Ok(Arc::new(CertResolver {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new((Arc::new(loaded), mtimes(cert, key))),
        }))
    }

    /// Loads the files again when they changed (or always, with `force`); keeps the current
    /// certificate when they do not load. True when a new certificate is in use.
    pub fn reload(&self, force: bool) -> bool {
        let now = mtimes(&self.cert, &self.key);
        {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            if !force && (now.is_none() || now == current.1) {
                return false;
            }
        }
        match load(&self.cert, &self.key) {
            Ok(loaded) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = (Arc::new(loaded), now);
                tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                metrics::counter!("espwatch_tls_certificate_reloads_total", "result" => "ok")
                    .increment(1);
                true
            }
            Err(e) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    "TLS certificate not reloaded; the previous one stays in use"
                );
                metrics::counter!("espwatch_tls_certificate_reloads_total", "result" => "failed")
                    .increment(1);
                false
            }
        }
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .0
                .clone(),
        )
    }
}

/// The acceptor for `cert`/`key`, and a task (ending with the resolver) that reloads them on
/// change and on SIGHUP. Needs a Tokio runtime.
pub fn acceptor(cert: &Path, key: &Path) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let resolver = CertResolver::new(cert, key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio::spawn(watch(Arc::downgrade(&resolver)));
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn watch(resolver: Weak<CertResolver>) {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let forced = match hangup.as_mut() {
            Some(signal) => tokio::select! {
                _ = signal.recv() => true,
                _ = tokio::time::sleep(RELOAD_POLL) => false,
            },
            None => {
                tokio::time::sleep(RELOAD_POLL).await;
                false
            }
        };
        #[cfg(not(unix))]
        let forced = {
            tokio::time::sleep(RELOAD_POLL).await;
            false
        };
        let Some(resolver) = resolver.upgrade() else {
            return;
        };
        let _ = tokio::task::spawn_blocking(move || resolver.reload(forced)).await;
    }
}
