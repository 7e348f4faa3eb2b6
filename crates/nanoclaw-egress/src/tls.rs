//! TLS for interception: the local certificate authority (made once by `nanoclaw init`), leaf
//! certificates minted per host and cached, and the verified client side toward upstreams.
//!
//! The CA key stays in the daemon's memory and its data dir; only the CA certificate is ever
//! handed to a sandbox. Upstream TLS is always verified, against the system roots plus any
//! extra roots the owner configured (a private service, or a test CA). This module never
//! builds a client that skips verification.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The CA's subject. A fixed name: the CA is recognized by its key, not its name.
const CA_NAME: &str = "nanoclaw local CA";
/// How long a CA made by `init` is valid.
const CA_DAYS: i64 = 3650;
/// How long a leaf is valid, and how long one is reused before a fresh one is minted.
const LEAF_DAYS: i64 = 30;
const LEAF_REUSE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Leaves cached at most; the least recently minted goes first.
const LEAF_CACHE: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate authority: {0}")]
    Ca(String),
    #[error("minting a certificate for {host}: {error}")]
    Leaf { host: String, error: String },
    #[error("extra root certificates: {0}")]
    Roots(String),
    #[error("TLS setup: {0}")]
    Config(#[from] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    dn.push(DnType::OrganizationName, "nanoclaw");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

/// A new CA: (certificate PEM, private key PEM). `nanoclaw init` writes these once.
pub fn generate_ca() -> Result<(String, String), TlsError> {
    let err = |e: rcgen::Error| TlsError::Ca(e.to_string());
    let key = KeyPair::generate().map_err(err)?;
    let mut params = ca_params().map_err(err)?;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(CA_DAYS);
    let cert = params.self_signed(&key).map_err(err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The local CA, minting and caching one leaf certificate per host.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    /// One key for every leaf: minting is then one signature, and the leaf key is no more
    /// secret than the CA key it lives beside.
    leaf_key: KeyPair,
    leaves: Mutex<HashMap<String, (Instant, Arc<ServerConfig>)>>,
}

impl Authority {
    /// Load the CA from its key. The issuer name is rebuilt exactly as `generate_ca` made it,
    /// so leaves chain to the certificate `init` wrote.
    pub fn load(key_pem: &str) -> Result<Authority, TlsError> {
        let err = |e: rcgen::Error| TlsError::Ca(e.to_string());
        let key = KeyPair::from_pem(key_pem).map_err(err)?;
        let issuer = Issuer::new(ca_params().map_err(err)?, key);
        Ok(Authority {
            issuer,
            leaf_key: KeyPair::generate().map_err(err)?,
            leaves: Mutex::new(HashMap::new()),
        })
    }

    /// The TLS server side for `host`: a cached leaf, or a newly minted one.
    pub fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, TlsError> {
        {
            let leaves = self.leaves.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((made, config)) = leaves.get(host)
                && made.elapsed() < LEAF_REUSE
            {
                return Ok(Arc::clone(config));
            }
        }
        let config = Arc::new(self.mint(host)?);
        let mut leaves = self.leaves.lock().unwrap_or_else(|p| p.into_inner());
        if leaves.len() >= LEAF_CACHE
            && let Some(oldest) = leaves
                .iter()
                .min_by_key(|(_, (made, _))| *made)
                .map(|(h, _)| h.clone())
        {
            leaves.remove(&oldest);
        }
        leaves.insert(host.to_owned(), (Instant::now(), Arc::clone(&config)));
        Ok(config)
    }

    fn mint(&self, host: &str) -> Result<ServerConfig, TlsError> {
        let err = |e: String| TlsError::Leaf {
            host: host.to_owned(),
            error: e,
        };
        let name = host.trim_start_matches('[').trim_end_matches(']');
        let mut params =
            CertificateParams::new(vec![name.to_owned()]).map_err(|e| err(e.to_string()))?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(LEAF_DAYS);
        let cert = params
            .signed_by(&self.leaf_key, &self.issuer)
            .map_err(|e| err(e.to_string()))?;
        let key =
            PrivateKeyDer::try_from(self.leaf_key.serialize_der()).map_err(|e| err(e.into()))?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)?;
        // The proxy speaks HTTP/1.1 to the sandbox.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// The certificates in one PEM file's contents; at least one, or an error.
pub fn pem_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Roots(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Roots("the file holds no PEM certificate".into()));
    }
    Ok(certs)
}

/// The client side toward upstreams: the system's roots plus `extra_roots_pem` (each a PEM
/// file's contents).
pub fn upstream_config(extra_roots_pem: &[Vec<u8>]) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::warn!(error = %e, "reading a system root certificate");
    }
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    for pem in extra_roots_pem {
        for cert in pem_certificates(pem)? {
            roots
                .add(cert)
                .map_err(|e| TlsError::Roots(e.to_string()))?;
        }
    }
    if roots.is_empty() {
        return Err(TlsError::Roots(format!(
            "no trusted roots: the system store gave {added} and no extra roots are configured"
        )));
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_chain_to_the_ca_and_are_cached() {
        let (cert_pem, key_pem) = generate_ca().unwrap();
        let ca = Authority::load(&key_pem).unwrap();
        let a = ca.server_config("api.example.com").unwrap();
        let b = ca.server_config("api.example.com").unwrap();
        assert!(Arc::ptr_eq(&a, &b), "second lookup must hit the cache");
        // A client trusting only the CA accepts the leaf (checked end to end in the proxy
        // tests); here: the CA certificate parses as a root.
        let client = upstream_config(&[cert_pem.into_bytes()]);
        assert!(client.is_ok());
    }

    #[test]
    fn a_bad_key_or_root_is_a_clear_error() {
        assert!(matches!(Authority::load("not a key"), Err(TlsError::Ca(_))));
        let e = upstream_config(&[b"no pem here".to_vec()]).unwrap_err();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
    }
}
