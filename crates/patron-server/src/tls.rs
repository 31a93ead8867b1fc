//! Optional TLS for every listener, from a PEM certificate chain and private
//! key named in `patron.toml`:
//!
//! ```toml
//! [tls]
//! cert = "/etc/patron/server.crt"   # the chain, leaf first
//! key = "/etc/patron/server.key"    # PKCS#8, PKCS#1 or SEC1
//! ```
//!
//! With it, HTTP is HTTPS (ALPN `http/1.1`), Flight SQL is gRPC over TLS (ALPN
//! `h2`), and pgwire answers a client's `SSLRequest` with TLS (`sslmode=require`
//! or `verify-full`). Bearer tokens then never cross the network in clear.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, ServerConfig};

/// Why the TLS configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { path: PathBuf },
    #[error("the certificate and key cannot be used together: {0}")]
    Rustls(#[from] rustls::Error),
}

/// One acceptor per protocol (they differ only in ALPN).
#[derive(Clone)]
pub(crate) struct Tls {
    pub(crate) http: TlsAcceptor,
    pub(crate) flight: TlsAcceptor,
    pub(crate) pg: TlsAcceptor,
}

impl Tls {
    /// Loads the chain and key and builds the acceptors.
    pub(crate) fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let read = |path: &Path| std::fs::read(path).map_err(|source| TlsError::Read { path: path.into(), source });
        let cert_pem = read(cert)?;
        let chain: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice())
            .collect::<Result<_, _>>()
            .map_err(|source| TlsError::Read { path: cert.into(), source })?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate { path: cert.into() });
        }
        let key_pem = read(key)?;
        let private_key = rustls_pemfile::private_key(&mut key_pem.as_slice())
            .map_err(|source| TlsError::Read { path: key.into(), source })?
            .ok_or_else(|| TlsError::NoKey { path: key.into() })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let acceptor = |alpn: &[&[u8]]| -> Result<TlsAcceptor, TlsError> {
            let mut config = ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(chain.clone(), private_key.clone_key())?;
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(TlsAcceptor::from(Arc::new(config)))
        };
        Ok(Self { http: acceptor(&[b"http/1.1"])?, flight: acceptor(&[b"h2"])?, pg: acceptor(&[])? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_files_are_refused_with_the_path_and_reason() {
        let dir = std::env::temp_dir().join(format!("patron-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let missing = Tls::load(&cert, &key).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(missing.contains("cannot read") && missing.contains("cert.pem"), "{missing}");
        std::fs::write(&cert, "not a certificate\n").unwrap();
        std::fs::write(&key, "not a key\n").unwrap();
        let empty = Tls::load(&cert, &key).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(empty.contains("holds no PEM certificate"), "{empty}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
