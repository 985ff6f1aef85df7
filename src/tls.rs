//! TLS: termination for clients (rustls, TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`, SNI, hot
//! certificate reload), the plain-HTTP redirect listener, and TLS to the upstream.
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
//!
//! Hot reload: the server's `ResolvesServerCert` (`CertStore`) reads the current keys from an
//! `ArcSwap`, so a handshake costs one atomic load and a reload never blocks one. Open
//! connections keep the certificate they were established with; new handshakes get the new one.
//! A replacement that fails to load keeps the old certificate for that name and is logged.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use http::header::{HeaderValue, HOST, LOCATION};
use http::{Request, Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::version::{TLS12, TLS13};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::config::LimitsConfig;
use crate::metrics::{CertificateLabels, Metrics, OutcomeLabels, ReasonLabels};
use crate::server::IdleTimeout;

/// The one crypto provider of the process.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// ALPN protocols offered to clients, in server preference order.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

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
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
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
    pub fn same_settings(&self, other: &ServerTlsConfig) -> bool {
        let same =
            |a: &CertSource, b: &CertSource| a.name == b.name && a.cert == b.cert && a.key == b.key;
        self.hsts == other.hsts
            && same(&self.default, &other.default)
            && self.sni.len() == other.sni.len()
            && self.sni.iter().zip(&other.sni).all(|(a, b)| same(a, b))
    }
}

/// The keys of the moment.
struct Keys {
    default: Arc<CertifiedKey>,
    /// In `CertStore::sources` order.
    sni: Vec<Arc<CertifiedKey>>,
}

/// The server certificates of the moment, chosen by SNI; an unknown or absent name gets the
/// default certificate.
pub struct CertStore {
    /// The default certificate's files, then each SNI table's.
    sources: Vec<(String, PathBuf, PathBuf)>,
    /// SNI name -> index into `Keys::sni`. Names never change without a restart.
    names: HashMap<String, usize>,
    current: ArcSwap<Keys>,
    reloads: AtomicU64,
    failures: AtomicU64,
    metrics: Arc<Metrics>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("sources", &self.sources)
            .finish_non_exhaustive()
    }
}

impl CertStore {
    pub fn new(config: &ServerTlsConfig, metrics: Arc<Metrics>) -> Arc<CertStore> {
        for source in std::iter::once(&config.default).chain(&config.sni) {
            record_expiry(
                &metrics,
                source.name.as_deref().unwrap_or("default"),
                &source.loaded,
            );
        }
        let mut names = HashMap::new();
        let mut sources = vec![(
            "default".to_string(),
            config.default.cert.clone(),
            config.default.key.clone(),
        )];
        for (index, source) in config.sni.iter().enumerate() {
            let name = source.name.clone().unwrap_or_default();
            names.insert(name.clone(), index);
            sources.push((name, source.cert.clone(), source.key.clone()));
        }
        Arc::new(CertStore {
            sources,
            names,
            current: ArcSwap::from_pointee(Keys {
                default: config.default.loaded.key.clone(),
                sni: config
                    .sni
                    .iter()
                    .map(|source| source.loaded.key.clone())
                    .collect(),
            }),
            reloads: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            metrics,
        })
    }

    /// The files watched for changes.
    pub fn files(&self) -> Vec<PathBuf> {
        self.sources
            .iter()
            .flat_map(|(_, cert, key)| [cert.clone(), key.clone()])
            .collect()
    }

    /// Re-reads every certificate. A pair that fails to load keeps its previous certificate; the
    /// others are swapped in. Returns the errors, one line per failed pair.
    pub fn reload(&self) -> Result<(), Vec<String>> {
        let previous = self.current.load_full();
        let mut errors = Vec::new();
        let mut loaded = Vec::with_capacity(self.sources.len());
        for (label, cert, key) in &self.sources {
            match load_cert_pair(cert, key) {
                Ok(pair) => {
                    for warning in &pair.warnings {
                        tracing::warn!(certificate = label.as_str(), "{warning}");
                    }
                    record_expiry(&self.metrics, label, &pair);
                    loaded.push(Some(pair.key));
                }
                Err(why) => {
                    tracing::error!(
                        certificate = label.as_str(),
                        "certificate reload refused, keeping the previous certificate: {why}"
                    );
                    errors.push(why);
                    loaded.push(None);
                }
            }
        }
        let mut loaded = loaded.into_iter();
        let default = loaded
            .next()
            .flatten()
            .unwrap_or_else(|| previous.default.clone());
        let sni = loaded
            .zip(&previous.sni)
            .map(|(key, old)| key.unwrap_or_else(|| old.clone()))
            .collect();
        self.current.store(Arc::new(Keys { default, sni }));
        let outcome = if errors.is_empty() { "ok" } else { "refused" };
        self.metrics
            .tls_certificate_reloads
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        if errors.is_empty() {
            self.reloads.fetch_add(1, Ordering::Relaxed);
            tracing::info!(certificates = self.sources.len(), "certificates reloaded");
            Ok(())
        } else {
            self.failures.fetch_add(1, Ordering::Relaxed);
            Err(errors)
        }
    }

    /// Reloads that loaded every certificate.
    pub fn reload_count(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Reloads in which at least one certificate was refused (and kept its previous one).
    pub fn failure_count(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The certificate for an SNI name: exact match, then a `*.` wildcard for the first label,
    /// then the default.
    pub fn select(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        let current = self.current.load();
        server_name
            .and_then(|name| {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                self.names.get(&name).copied().or_else(|| {
                    let (_, parent) = name.split_once('.')?;
                    self.names.get(&format!("*.{parent}")).copied()
                })
            })
            .and_then(|index| current.sni.get(index))
            .unwrap_or(&current.default)
            .clone()
    }
}

fn record_expiry(metrics: &Metrics, certificate: &str, loaded: &LoadedCert) {
    if let Some(not_after) = loaded.not_after_unix {
        metrics
            .tls_certificate_expiry
            .get_or_create(&CertificateLabels {
                certificate: certificate.to_string(),
            })
            .set(not_after);
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.select(client_hello.server_name()))
    }
}

/// What the server needs to terminate TLS on a listener.
pub struct TlsListener {
    pub acceptor: TlsAcceptor,
    pub store: Arc<CertStore>,
    pub hsts: Option<HeaderValue>,
    metrics: Arc<Metrics>,
}

impl TlsListener {
    /// `metrics` is the process's registry (`Live::metrics`): certificate expiry, reloads and
    /// handshake failures are reported there.
    pub fn new(config: &ServerTlsConfig, metrics: &Arc<Metrics>) -> Result<TlsListener, String> {
        for source in std::iter::once(&config.default).chain(&config.sni) {
            tracing::info!(
                certificate = source.name.as_deref().unwrap_or("default"),
                file = %source.cert.display(),
                subject = %source.loaded.subject,
                not_after = source.loaded.not_after.as_deref().unwrap_or("unknown"),
                "TLS certificate loaded"
            );
        }
        let store = CertStore::new(config, metrics.clone());
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&TLS12, &TLS13])
            .map_err(|err| format!("TLS setup: {err}"))?
            .with_no_client_auth()
            .with_cert_resolver(store.clone());
        server.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        // Session resumption with stateless tickets (keys rotate every 6 hours), as HAProxy and
        // nginx do by default: rustls' default is a 256-entry in-memory cache, which more than a
        // few hundred clients evict, so that every reconnect pays a full handshake. TLS 1.3
        // resumption still runs a fresh ECDHE (rustls supports only psk_dhe_ke).
        server.ticketer = rustls::crypto::ring::Ticketer::new()
            .map_err(|err| format!("TLS session tickets: {err}"))?;
        Ok(TlsListener {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            store,
            hsts: config.hsts.clone(),
            metrics: metrics.clone(),
        })
    }
}

impl TlsListener {
    fn handshake_failed(&self, reason: &'static str) {
        self.metrics
            .tls_handshake_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }
}

/// Reloads the certificates on SIGHUP, and when a certificate or key file's modification time or
/// size changes (checked every `poll`). Runs until the task is dropped.
pub async fn watch_certs(store: Arc<CertStore>, poll: Duration) {
    let files = store.files();
    crate::live::watch_files(files, poll, move || {
        let _ = store.reload();
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Accepting client connections (used by server.rs)
// ---------------------------------------------------------------------------------------------

/// A client connection: plain, or TLS over the same transport.
pub enum ClientStream<S> {
    Plain(S),
    Tls(Box<tokio_rustls::server::TlsStream<S>>),
}

impl<S> ClientStream<S> {
    /// Whether ALPN chose HTTP/2 in the TLS handshake.
    pub fn negotiated_h2(&self) -> bool {
        match self {
            ClientStream::Plain(_) => false,
            ClientStream::Tls(tls) => tls.get_ref().1.alpn_protocol() == Some(b"h2"),
        }
    }

    /// The transport under TLS, if any: what a parked connection waits on (src/keepalive.rs).
    pub fn transport(&self) -> &S {
        match self {
            ClientStream::Plain(stream) => stream,
            ClientStream::Tls(tls) => tls.get_ref().0,
        }
    }

    pub fn transport_mut(&mut self) -> &mut S {
        match self {
            ClientStream::Plain(stream) => stream,
            ClientStream::Tls(tls) => tls.get_mut().0,
        }
    }
}

/// The first step of a connection on a listener: with `tls`, the TLS handshake, which must finish
/// within `timeout` (a client that stalls it would otherwise hold a connection slot forever).
/// `None` when the handshake failed or timed out (logged at debug: scanners and old clients do
/// this all day).
pub async fn accept<S>(
    tls: Option<&TlsListener>,
    stream: S,
    timeout: Duration,
    peer: SocketAddr,
) -> Option<ClientStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(tls) = tls else {
        return Some(ClientStream::Plain(stream));
    };
    match tokio::time::timeout(timeout, tls.acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Some(ClientStream::Tls(Box::new(stream))),
        Ok(Err(err)) => {
            tracing::debug!(error = %err, %peer, "TLS handshake failed");
            tls.handshake_failed("error");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            tls.handshake_failed("timeout");
            None
        }
    }
}

/// Adds the configured `Strict-Transport-Security` (TLS listeners only), replacing the backend's.
pub fn add_hsts<B>(response: &mut Response<B>, hsts: Option<HeaderValue>) {
    if let Some(hsts) = hsts {
        response
            .headers_mut()
            .insert(http::header::STRICT_TRANSPORT_SECURITY, hsts);
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ClientStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            ClientStream::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ClientStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(stream) => Pin::new(stream).poll_write(cx, data),
            ClientStream::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            ClientStream::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ClientStream::Plain(stream) => stream.is_write_vectored(),
            ClientStream::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            ClientStream::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            ClientStream::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The plain-HTTP redirect listener
// ---------------------------------------------------------------------------------------------

/// The `308 Permanent Redirect` a plain-HTTP request gets: same host, the HTTPS port (omitted when
/// 443), same path and query. Nothing is forwarded. A missing or malformed `Host` gets 400: the
/// Location is built only from a host that parses as an authority without user info.
pub fn redirect_response<B>(request: &Request<B>, https_port: u16) -> Response<String> {
    let host = request
        .headers()
        .get(HOST)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
        .or_else(|| request.uri().authority().map(|a| a.as_str().to_string()));
    let authority = host.and_then(|host| host.parse::<http::uri::Authority>().ok());
    let Some(authority) = authority.filter(|a| !a.as_str().contains('@')) else {
        let mut response = Response::new(
            "{\"error\":\"bad_request\",\"message\":\"a valid Host header is required\"}"
                .to_string(),
        );
        *response.status_mut() = StatusCode::BAD_REQUEST;
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return response;
    };
    let host = authority.host();
    // An IPv6 literal keeps its brackets in `host()`.
    let mut location = format!("https://{host}");
    if https_port != 443 {
        location.push_str(&format!(":{https_port}"));
    }
    match request.uri().path_and_query() {
        Some(path) if path.as_str().starts_with('/') => location.push_str(path.as_str()),
        _ => location.push('/'),
    }
    let mut response = Response::new(String::new());
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    match HeaderValue::from_str(&location) {
        Ok(value) => {
            response.headers_mut().insert(LOCATION, value);
        }
        Err(_) => *response.status_mut() = StatusCode::BAD_REQUEST,
    }
    response
}

/// The plain-HTTP listener of `server.redirect_http`: every request gets a 308 to the same host
/// and path on HTTPS port `https_port` (`redirect_response`). Nothing is forwarded. Same
/// connection limits as the gateway listener; on shutdown, open connections get
/// `shutdown_grace` to finish.
pub async fn serve_redirect(
    listener: TcpListener,
    limits: LimitsConfig,
    https_port: u16,
    shutdown: impl Future<Output = ()>,
) {
    let builder = Arc::new(crate::server::connection_builder(&limits));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed (redirect listener)");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let io = TokioIo::new(IdleTimeout::new(stream, limits.idle_timeout));
        let connection = builder.serve_connection(
            io,
            service_fn(move |request| async move {
                Ok::<_, Infallible>(redirect_response(&request, https_port))
            }),
        );
        let watched = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            let _slot = slot;
            let _ = watched.await;
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(limits.shutdown_grace, graceful.shutdown()).await;
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
pub enum UpstreamTrust {
    /// The built-in Mozilla root set (webpki-roots).
    WebPkiRoots,
    /// Only the CAs in this file.
    CaFile(PathBuf),
    /// Not at all (`insecure_skip_verify = true`).
    Insecure,
}

/// Builds the client side TLS config for the upstream. `client` is the mTLS identity.
pub fn upstream_client_config(
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

/// The connector of the upstream client: plain TCP for `http://`, TLS for `https://` (never
/// falling back to plain for an https upstream).
pub fn upstream_connector(
    mut http: HttpConnector,
    tls: Option<&UpstreamTls>,
) -> hyper_rustls::HttpsConnector<HttpConnector> {
    // The TLS layer decides the scheme; the TCP connector must accept https URIs.
    http.enforce_http(false);
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    match tls {
        Some(tls) => builder
            .with_tls_config(ClientConfig::clone(&tls.client))
            .https_only()
            .enable_http1()
            .wrap_connector(http),
        None => builder
            .with_tls_config(unused_client_config())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http),
    }
}

/// The TLS config of the connector of an `http://` upstream: never used, but the connector type
/// needs one. It trusts nothing.
fn unused_client_config() -> ClientConfig {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect(host: Option<&str>, target: &str, port: u16) -> (u16, Option<String>) {
        let mut request = Request::builder().uri(target);
        if let Some(host) = host {
            request = request.header(HOST, host);
        }
        let response = redirect_response(&request.body(()).unwrap_or_default(), port);
        (
            response.status().as_u16(),
            response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(String::from),
        )
    }

    #[test]
    fn redirects_keep_host_path_and_query_and_replace_the_port() {
        let location = |host, target, port| redirect(Some(host), target, port).1;
        assert_eq!(
            location("api.example.com", "/a/b?c=d", 443).as_deref(),
            Some("https://api.example.com/a/b?c=d")
        );
        assert_eq!(
            location("api.example.com:8080", "/", 8443).as_deref(),
            Some("https://api.example.com:8443/")
        );
        assert_eq!(
            location("[::1]:80", "/x", 443).as_deref(),
            Some("https://[::1]/x")
        );
        assert_eq!(redirect(Some("a@evil.test"), "/", 443).0, 400);
        assert_eq!(redirect(Some("bad host"), "/", 443).0, 400);
        assert_eq!(redirect(None, "/", 443).0, 400);
        // An absolute-form target carries its own authority; Host still wins when present.
        assert_eq!(
            redirect(None, "http://site.test/p", 443).1.as_deref(),
            Some("https://site.test/p")
        );
    }
}
