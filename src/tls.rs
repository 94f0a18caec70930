//! Native TLS of the listeners (`[server.tls]`, and `[admin.tls]` once the admin listener uses
//! it): rustls with the ring provider, TLS 1.2 and 1.3 only.
//!
//! The certificate is served through a [`ReloadableCert`] resolver instead of being fixed in the
//! `ServerConfig`, so SIGHUP can swap it: new handshakes get the new certificate, connections
//! already established keep theirs and are never dropped.

use crate::settings::TlsSettings;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use std::sync::{Arc, RwLock};

/// Why a TLS configuration could not be built; names the file and the setting.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// The ring provider, limited to TLS 1.2 and 1.3 by rustls itself.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Read a certificate chain and its private key, checking that they belong together (a
/// mismatched pair would otherwise fail only at the first handshake).
pub fn load_certified_key(cert_file: &str, key_file: &str) -> Result<CertifiedKey, TlsError> {
    let chain = read_certificates(cert_file, "cert_file")?;
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
        TlsError(format!(
            "key_file {key_file:?}: no usable PEM private key: {e}"
        ))
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
        TlsError(format!(
            "cert_file {cert_file:?} and key_file {key_file:?}: {e}"
        ))
    })
}

fn read_certificates(file: &str, setting: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(file)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError(format!("{setting} {file:?}: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "{setting} {file:?}: no PEM certificate in the file"
        )));
    }
    Ok(certs)
}

/// A certificate resolver whose certificate can be replaced while the server runs.
#[derive(Debug)]
pub struct ReloadableCert {
    cert_file: String,
    key_file: String,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadableCert {
    /// Load the files once.
    pub fn new(settings: &TlsSettings) -> Result<Self, TlsError> {
        let key = load_certified_key(&settings.cert_file, &settings.key_file)?;
        Ok(Self {
            cert_file: settings.cert_file.clone(),
            key_file: settings.key_file.clone(),
            current: RwLock::new(Arc::new(key)),
        })
    }

    /// Re-read the files. On error the certificate in use stays (a half-written file during a
    /// renewal must not take the listener down).
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = Arc::new(load_certified_key(&self.cert_file, &self.key_file)?);
        match self.current.write() {
            Ok(mut current) => *current = key,
            // A poisoned lock only means a panic elsewhere while holding it; the value is an Arc
            // and is always whole, so replacing it is safe.
            Err(poisoned) => *poisoned.into_inner() = key,
        }
        Ok(())
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = match self.current.read() {
            Ok(current) => current,
            Err(poisoned) => poisoned.into_inner(),
        };
        Some(current.clone())
    }
}

/// A rustls `ServerConfig` for one listener, and the resolver to reload on SIGHUP. With
/// `client_ca_file`, a client certificate issued by one of its CAs is required.
pub fn server_config(
    settings: &TlsSettings,
) -> Result<(rustls::ServerConfig, Arc<ReloadableCert>), TlsError> {
    let resolver = Arc::new(ReloadableCert::new(settings)?);
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError(e.to_string()))?;
    let builder = if settings.client_ca_file.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for cert in read_certificates(&settings.client_ca_file, "client_ca_file")? {
            roots.add(cert).map_err(|e| {
                TlsError(format!("client_ca_file {:?}: {e}", settings.client_ca_file))
            })?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| TlsError(format!("client_ca_file {:?}: {e}", settings.client_ca_file)))?;
        builder.with_client_cert_verifier(verifier)
    };
    let config = builder.with_cert_resolver(resolver.clone());
    Ok((config, resolver))
}

/// Reload every resolver on each SIGHUP until the task is dropped (Unix only).
pub async fn reload_on_sighup(resolvers: Vec<Arc<ReloadableCert>>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; TLS certificates will not be reloaded");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            for resolver in &resolvers {
                match resolver.reload() {
                    Ok(()) => {
                        tracing::info!(cert_file = %resolver.cert_file, "TLS certificate reloaded")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "TLS certificate reload failed; keeping the current one")
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = resolvers;
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &std::path::Path, name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let cert_file = dir.join(format!("{name}.crt"));
        let key_file = dir.join(format!("{name}.key"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        (
            cert_file.to_str().unwrap().to_owned(),
            key_file.to_str().unwrap().to_owned(),
        )
    }

    #[test]
    fn a_key_that_does_not_match_the_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_a, _) = write_pair(dir.path(), "a");
        let (_, key_b) = write_pair(dir.path(), "b");
        let e = load_certified_key(&cert_a, &key_b).unwrap_err().to_string();
        assert!(e.contains("cert_file") && e.contains("key_file"), "{e}");
    }

    #[test]
    fn a_missing_or_empty_file_names_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let (cert, key) = write_pair(dir.path(), "a");
        let e = load_certified_key(empty.to_str().unwrap(), &key).unwrap_err();
        assert!(e.to_string().contains("cert_file"), "{e}");
        let e = load_certified_key(&cert, "/nonexistent/key.pem").unwrap_err();
        assert!(e.to_string().contains("key_file"), "{e}");
    }

    #[test]
    fn a_failed_reload_keeps_the_certificate_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path(), "a");
        let settings = TlsSettings {
            cert_file: cert.clone(),
            key_file: key,
            client_ca_file: String::new(),
        };
        let resolver = ReloadableCert::new(&settings).unwrap();
        let before = resolver.current.read().unwrap().cert.clone();
        std::fs::write(&cert, "not a certificate").unwrap();
        assert!(resolver.reload().is_err());
        assert_eq!(resolver.current.read().unwrap().cert, before);
    }
}
