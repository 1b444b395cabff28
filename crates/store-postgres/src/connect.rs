//! Connection settings: the URL (with libpq's `sslmode` meanings), TLS with rustls/ring, the
//! statement timeout, and the pool.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use espwatch_store::StoreError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_postgres::Client;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::types::db_err;

/// Parsed connection settings, ready to open connections.
#[derive(Clone)]
pub struct Connector {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
}

/// How the server certificate is checked, following libpq's `sslmode`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Verify {
    /// `disable` / `allow` / `prefer` (and no sslmode): plain TCP.
    NoTls,
    /// `require`: encrypted; the certificate is checked only when `sslrootcert` is given.
    Encrypt,
    /// `verify-ca`: chain checked against `sslrootcert` or the platform roots.
    Ca,
    /// `verify-full`: chain and host name.
    Full,
}

/// Removes `key=value` from the URL's query string, returning the value.
fn take_param(url: &mut String, key: &str) -> Option<String> {
    let q = url.find('?')?;
    let (base, query) = url.split_at(q);
    let mut found = None;
    let kept: Vec<&str> = query[1..]
        .split('&')
        .filter(|kv| match kv.split_once('=') {
            Some((k, v)) if k == key => {
                found = Some(v.to_owned());
                false
            }
            _ => !kv.is_empty(),
        })
        .collect();
    *url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    found
}

/// The URL with any password replaced, for logs and `config show`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let redacted = if userinfo.contains(':') {
                format!("{user}:<redacted>")
            } else {
                user.to_owned()
            };
            format!("{}://{redacted}{}", &url[..scheme_end], &rest[at..])
        }
        None => url.to_owned(),
    }
}

impl Connector {
    /// Parses a `postgres://` URL. `sslmode=require|verify-ca|verify-full` turns TLS on;
    /// `sslrootcert=FILE` (PEM) names the CA to trust instead of the platform's roots.
    pub fn new(
        url: &str,
        statement_timeout: Duration,
        search_path: Option<&str>,
        application_name: &str,
    ) -> Result<Connector, StoreError> {
        let bad = |why: String| StoreError::Internal(format!("invalid database URL: {why}"));
        let mut url = url.to_owned();
        let sslmode = take_param(&mut url, "sslmode");
        let rootcert = take_param(&mut url, "sslrootcert");
        let verify = match sslmode.as_deref() {
            None | Some("disable" | "allow" | "prefer") => Verify::NoTls,
            Some("require") => Verify::Encrypt,
            Some("verify-ca") => Verify::Ca,
            Some("verify-full") => Verify::Full,
            Some(other) => return Err(bad(format!("unknown sslmode {other:?}"))),
        };
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| bad(e.to_string()))?;
        config.ssl_mode(if verify == Verify::NoTls {
            SslMode::Disable
        } else {
            SslMode::Require
        });
        let mut options = format!("-c statement_timeout={}", statement_timeout.as_millis());
        if let Some(path) = search_path {
            options.push_str(&format!(" -c search_path={path}"));
        }
        config.options(&options);
        if config.get_application_name().is_none() {
            config.application_name(application_name);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        config.keepalives_idle(Duration::from_secs(30));
        let tls = tls_config(verify, rootcert.as_deref())?;
        Ok(Connector {
            config,
            tls: MakeRustlsConnect::new(tls),
        })
    }

    /// A dedicated connection (the writer's, migrations, admin work), driven by its own task.
    pub async fn connect(&self) -> Result<Client, StoreError> {
        let (client, connection) = self
            .config
            .connect(self.tls.clone())
            .await
            .map_err(|e| db_err("connecting to PostgreSQL", e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "PostgreSQL connection ended");
            }
        });
        Ok(client)
    }

    pub fn pool(&self, size: usize) -> Result<Pool, StoreError> {
        let manager = Manager::from_config(
            self.config.clone(),
            self.tls.clone(),
            ManagerConfig {
                // A connection whose socket died (server restart, terminated backend) is
                // noticed as closed and replaced; no round trip per checkout.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        Pool::builder(manager)
            .max_size(size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| StoreError::Internal(format!("building the connection pool: {e}")))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_config(verify: Verify, rootcert: Option<&str>) -> Result<rustls::ClientConfig, StoreError> {
    let bad = |why: String| StoreError::Internal(format!("database TLS setup: {why}"));
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?;
    let roots = match rootcert {
        Some(path) => {
            use rustls::pki_types::pem::PemObject;
            let mut store = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path)
                .map_err(|e| bad(format!("reading sslrootcert {path}: {e}")))?
            {
                let cert = cert.map_err(|e| bad(format!("reading sslrootcert {path}: {e}")))?;
                store
                    .add(cert)
                    .map_err(|e| bad(format!("sslrootcert {path}: {e}")))?;
            }
            Some(Arc::new(store))
        }
        None => None,
    };
    let webpki = |roots: Arc<rustls::RootCertStore>| {
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| bad(e.to_string()))
    };
    let config = match (verify, roots) {
        (Verify::NoTls, _) | (Verify::Encrypt, None) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider())))
            .with_no_client_auth(),
        (Verify::Ca, Some(roots)) | (Verify::Encrypt, Some(roots)) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki(roots)?)))
            .with_no_client_auth(),
        (Verify::Full, Some(roots)) => builder
            .with_webpki_verifier(webpki(roots)?)
            .with_no_client_auth(),
        (Verify::Ca | Verify::Full, None) => {
            use rustls_platform_verifier::BuilderVerifierExt;
            builder
                .with_platform_verifier()
                .map_err(|e| bad(e.to_string()))?
                .with_no_client_auth()
        }
    };
    Ok(config)
}

/// `sslmode=require` without a root certificate: like libpq, encrypt without authenticating
/// the server (handshake signatures are still checked).
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the host name is not compared.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_parameters_are_taken_out_of_the_url() {
        let mut url = "postgres://u@h/db?sslmode=require&application_name=x".to_owned();
        assert_eq!(take_param(&mut url, "sslmode").as_deref(), Some("require"));
        assert_eq!(url, "postgres://u@h/db?application_name=x");
        assert_eq!(
            take_param(&mut url, "application_name").as_deref(),
            Some("x")
        );
        assert_eq!(url, "postgres://u@h/db");
        assert_eq!(take_param(&mut url, "sslmode"), None);
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/x?sslmode=require"),
            "postgres://app:<redacted>@db:5432/x?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1/test"),
            "postgres://postgres@127.0.0.1/test"
        );
    }

    #[test]
    fn sslmodes_parse() {
        let d = Duration::from_secs(30);
        for mode in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
            let url = format!("postgres://u@localhost/db?sslmode={mode}");
            assert!(Connector::new(&url, d, None, "t").is_ok(), "{mode}");
        }
        assert!(Connector::new("postgres://u@localhost/db?sslmode=bogus", d, None, "t").is_err());
    }
}
