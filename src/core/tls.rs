//! Certificates and TLS configurations: PEM loading with file-named errors, the key/certificate
//! match, validity warnings, the server certificate settings, and the rustls client
//! configuration for upstreams (trust roots, mTLS identity, explicit `insecure_skip_verify`).
//! No I/O beyond reading the files named in the config.
//!
//! One crypto provider, `ring`, chosen explicitly everywhere (`provider()`): rustls panics at
//! runtime when it cannot tell which provider to use, and two linked providers make that a
//! build-order accident.
//!
//! Certificates are read from PEM with rustls-pki-types' `PemObject` (rustls-pemfile is
//! unmaintained). Every error names the file and what is wrong with it. A key that does not match
//! its certificate is refused at load (`CertifiedKey::keys_match`), so a bad deployment fails at
//! `authgate check` or keeps the old certificate, never at the first handshake. An expired
//! certificate is loaded with a warning: refusing it would turn a missed renewal into an outage
//! of every client that still accepts it (and of the health checks that would tell you).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use http::header::HeaderValue;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::version::{TLS12, TLS13};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The one crypto provider of the process.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The provider a TLS listener uses: `provider()` with its cipher suites in the server's order of
/// preference, AES-128-GCM first. A client's own order would usually pick AES-256-GCM with
/// SHA-384 (OpenSSL's default), whose key schedule costs SHA-512 blocks, which `ring` computes
/// without hardware help on CPUs that have SHA-NI for SHA-256 only: in resumed handshakes, where
/// most of the work is the key schedule and one X25519 exchange, that was the largest single cost.
/// AES-128-GCM is what Go and Mozilla's recommended configurations prefer; its 128-bit strength
/// matches X25519's.
pub fn server_provider() -> Arc<CryptoProvider> {
    use rustls::CipherSuite::*;
    let mut provider = rustls::crypto::ring::default_provider();
    let rank = |suite: rustls::CipherSuite| match suite {
        TLS13_AES_128_GCM_SHA256 => 0,
        TLS13_AES_256_GCM_SHA384 => 1,
        TLS13_CHACHA20_POLY1305_SHA256 => 2,
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 | TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 3,
        TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 | TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 4,
        _ => 5,
    };
    // A stable sort: suites of one rank keep ring's order (ECDSA before RSA).
    provider
        .cipher_suites
        .sort_by_key(|suite| rank(suite.suite()));
    Arc::new(provider)
}

/// Makes `provider()` the process default too, for clients that build their rustls config from
/// the default (the Redis client does). Idempotent.
pub fn install_default_provider() {
    if CryptoProvider::get_default().is_none() {
        // Fails only when another thread installed one first, which is as good.
        let _ = CryptoProvider::install_default(rustls::crypto::ring::default_provider());
    }
}

/// How many PEM certificates `pem` holds (0 when it holds none or is not PEM).
pub fn count_pem_certificates(pem: &[u8]) -> usize {
    CertificateDer::pem_slice_iter(pem)
        .take_while(Result::is_ok)
        .count()
}

/// ALPN protocols offered to clients, in server preference order.
pub(crate) const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

// ---------------------------------------------------------------------------------------------
// Loading certificates and keys
// ---------------------------------------------------------------------------------------------

/// A certificate chain and its private key, checked to belong together.
#[derive(Clone)]
pub struct LoadedCert {
    pub key: Arc<CertifiedKey>,
    /// The leaf's subject, for logs.
    pub subject: String,
    /// The leaf's `notAfter` (UTC, RFC 3339), when it could be read.
    pub not_after: Option<String>,
    /// The same as a Unix time, for the expiry metric.
    pub not_after_unix: Option<i64>,
    /// Things worth a warning that do not stop the certificate from being used (expired, not yet
    /// valid).
    pub warnings: Vec<String>,
}

impl fmt::Debug for LoadedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedCert")
            .field("subject", &self.subject)
            .field("chain_len", &self.key.cert.len())
            .field("warnings", &self.warnings)
            .finish_non_exhaustive()
    }
}

fn pem_error(path: &Path, what: &str, err: pem::Error) -> String {
    match err {
        pem::Error::Io(err) => format!("cannot read {}: {err}", path.display()),
        pem::Error::NoItemsFound => format!("{}: no {what} found in it", path.display()),
        other => format!("{}: not valid PEM: {other:?}", path.display()),
    }
}

/// Reads every certificate of a PEM file, in order. Other PEM blocks (a key in the same file)
/// are skipped; no certificate at all is an error.
pub(crate) fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|err| pem_error(path, "certificate", err))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| pem_error(path, "certificate", err))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no certificate found in it (expected a -----BEGIN CERTIFICATE----- block)",
            path.display()
        ));
    }
    Ok(certs)
}

/// Reads a certificate chain and its key and checks that they belong together.
pub fn load_cert_pair(cert_path: &Path, key_path: &Path) -> Result<LoadedCert, String> {
    let chain = load_certs(cert_path)?;
    let key_der = PrivateKeyDer::from_pem_file(key_path).map_err(|err| match err {
        pem::Error::NoItemsFound => format!(
            "{}: no private key found in it (expected a PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block)",
            key_path.display()
        ),
        other => pem_error(key_path, "private key", other),
    })?;
    let signing_key = provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|err| format!("{}: unusable private key: {err}", key_path.display()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(format!(
                "{}: the private key does not match the certificate in {}",
                key_path.display(),
                cert_path.display()
            ))
        }
        // ring can always derive the public key; a provider that cannot is not a mismatch.
        Err(rustls::Error::InconsistentKeys(_)) => {}
        Err(err) => {
            return Err(format!(
                "{}: the first certificate cannot be parsed: {err}",
                cert_path.display()
            ))
        }
    }
    let mut loaded = LoadedCert {
        key: Arc::new(certified),
        subject: String::new(),
        not_after: None,
        not_after_unix: None,
        warnings: Vec::new(),
    };
    check_validity(cert_path, &mut loaded, SystemTime::now());
    Ok(loaded)
}

/// Reads the leaf's subject and validity period; an expired or not yet valid certificate is a
/// warning, not an error (see the module comment).
fn check_validity(path: &Path, loaded: &mut LoadedCert, now: SystemTime) {
    use x509_cert::der::Decode;
    let Some(leaf) = loaded.key.cert.first() else {
        return;
    };
    let parsed = match x509_cert::Certificate::from_der(leaf.as_ref()) {
        Ok(parsed) => parsed,
        Err(err) => {
            loaded.warnings.push(format!(
                "{}: cannot read the certificate's validity period: {err}",
                path.display()
            ));
            return;
        }
    };
    let tbs = &parsed.tbs_certificate;
    loaded.subject = tbs.subject.to_string();
    let not_before = tbs.validity.not_before;
    let not_after = tbs.validity.not_after;
    loaded.not_after = Some(not_after.to_string());
    loaded.not_after_unix = i64::try_from(not_after.to_unix_duration().as_secs()).ok();
    if not_after.to_system_time() < now {
        loaded.warnings.push(format!(
            "{}: the certificate ({}) expired at {not_after}; clients will refuse it",
            path.display(),
            loaded.subject
        ));
    } else if not_before.to_system_time() > now {
        loaded.warnings.push(format!(
            "{}: the certificate ({}) is not valid before {not_before}; clients will refuse it until then",
            path.display(),
            loaded.subject
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// Server side: configuration, SNI, reload
// ---------------------------------------------------------------------------------------------

/// One certificate the server can present: where it comes from and what was loaded.
#[derive(Debug, Clone)]
pub struct CertSource {
    /// `None` for the default certificate; else the SNI name (lower case; may be `*.domain`).
    pub name: Option<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub loaded: LoadedCert,
}

/// `[server.tls]`, validated: every certificate loaded and checked.
#[derive(Debug, Clone)]
pub struct ServerTlsConfig {
    /// `cert` and `key`: for clients that send no SNI name or one no `sni` table names.
    pub default: CertSource,
    /// One per `[[server.tls.sni]]` table.
    pub sni: Vec<CertSource>,
    /// `Strict-Transport-Security` added to every response on the TLS listener.
    pub hsts: Option<HeaderValue>,
}

impl ServerTlsConfig {
    /// Whether two configs differ in what needs a restart (paths, names, HSTS). Certificate
    /// contents are not compared: they reload on their own.
    pub(crate) fn same_settings(&self, other: &ServerTlsConfig) -> bool {
        let same =
            |a: &CertSource, b: &CertSource| a.name == b.name && a.cert == b.cert && a.key == b.key;
        self.hsts == other.hsts
            && same(&self.default, &other.default)
            && self.sni.len() == other.sni.len()
            && self.sni.iter().zip(&other.sni).all(|(a, b)| same(a, b))
    }
}

// ---------------------------------------------------------------------------------------------
// Upstream side
// ---------------------------------------------------------------------------------------------

/// TLS to the upstream, validated at config load.
#[derive(Clone)]
pub struct UpstreamTls {
    pub client: Arc<ClientConfig>,
    /// `insecure_skip_verify = true`: the backend's certificate is not checked.
    pub insecure: bool,
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("insecure", &self.insecure)
            .finish_non_exhaustive()
    }
}

/// How the upstream's certificate is verified.
pub(crate) enum UpstreamTrust {
    /// The built-in Mozilla root set (webpki-roots).
    WebPkiRoots,
    /// Only the CAs in this file.
    CaFile(PathBuf),
    /// Not at all (`insecure_skip_verify = true`).
    Insecure,
}

/// Builds the client side TLS config for the upstream. `client` is the mTLS identity.
pub(crate) fn upstream_client_config(
    trust: &UpstreamTrust,
    client: Option<LoadedCert>,
) -> Result<ClientConfig, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&TLS12, &TLS13])
        .map_err(|err| format!("TLS setup: {err}"))?;
    let builder = match trust {
        UpstreamTrust::WebPkiRoots => {
            let roots = RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            builder.with_root_certificates(roots)
        }
        UpstreamTrust::CaFile(path) => {
            let mut roots = RootCertStore::empty();
            for (index, cert) in load_certs(path)?.into_iter().enumerate() {
                roots.add(cert).map_err(|err| {
                    format!(
                        "{}: certificate {} cannot be used as a trust anchor: {err}",
                        path.display(),
                        index + 1
                    )
                })?;
            }
            builder.with_root_certificates(roots)
        }
        UpstreamTrust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(
                provider.signature_verification_algorithms,
            ))),
    };
    Ok(match client {
        Some(identity) => builder.with_client_cert_resolver(Arc::new(ClientIdentity(identity.key))),
        None => builder.with_no_client_auth(),
    })
}

/// The TLS config of the connector of an `http://` upstream: never used, but the connector type
/// needs one. It trusts nothing.
pub(crate) fn unused_client_config() -> ClientConfig {
    match ClientConfig::builder_with_provider(provider()).with_protocol_versions(&[&TLS12, &TLS13])
    {
        Ok(builder) => builder
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth(),
        Err(_) => unreachable_client_config(),
    }
}

/// ring's default provider has cipher suites and key exchanges for TLS 1.2 and 1.3, so building
/// a config for those versions cannot fail; no input reaches this.
#[cold]
fn unreachable_client_config() -> ClientConfig {
    panic!("the ring provider supports TLS 1.2 and 1.3")
}

/// The client certificate sent to the upstream (mTLS), whatever CA hints the server gives.
#[derive(Debug)]
struct ClientIdentity(Arc<CertifiedKey>);

impl ResolvesClientCert for ClientIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// `insecure_skip_verify`: accepts any server certificate. The handshake signatures are still
/// checked (the connection is still encrypted to whoever holds the presented key); only who that
/// is goes unchecked. Chosen explicitly in the config and logged as a warning at every load.
#[derive(Debug)]
struct NoVerification(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
