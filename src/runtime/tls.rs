//! TLS termination for clients: rustls (TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`), the SNI
//! certificate store with hot reload, the handshake on accept, and HSTS.
//!
//! Hot reload: the server's `ResolvesServerCert` (`CertStore`) reads the current keys from an
//! `ArcSwap`, so a handshake costs one atomic load and a reload never blocks one. Open
//! connections keep the certificate they were established with; new handshakes get the new one.
//! A replacement that fails to load keeps the old certificate for that name and is logged.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::header::HeaderValue;
use http::Response;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::version::{TLS12, TLS13};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::TlsAcceptor;

use crate::core::metrics::{CertificateLabels, Metrics, OutcomeLabels, ReasonLabels};
use crate::core::tls::{load_cert_pair, server_provider, LoadedCert, ServerTlsConfig, ALPN};

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
    pub(crate) fn files(&self) -> Vec<PathBuf> {
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

    /// Reloads in which at least one certificate was refused (and kept its previous one).
    pub fn failure_count(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The certificate for an SNI name: exact match, then a `*.` wildcard for the first label,
    /// then the default.
    pub(crate) fn select(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
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
        let mut server = ServerConfig::builder_with_provider(server_provider())
            .with_protocol_versions(&[&TLS12, &TLS13])
            .map_err(|err| format!("TLS setup: {err}"))?
            .with_no_client_auth()
            .with_cert_resolver(store.clone());
        server.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        // The server's cipher suite order (`server_provider`), not the client's.
        server.ignore_client_order = true;
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
    crate::runtime::live::watch_files(files, poll, move || {
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
    pub(crate) fn negotiated_h2(&self) -> bool {
        match self {
            ClientStream::Plain(_) => false,
            ClientStream::Tls(tls) => tls.get_ref().1.alpn_protocol() == Some(b"h2"),
        }
    }

    /// The transport under TLS, if any: what a parked connection waits on (src/runtime/keepalive.rs).
    pub(crate) fn transport(&self) -> &S {
        match self {
            ClientStream::Plain(stream) => stream,
            ClientStream::Tls(tls) => tls.get_ref().0,
        }
    }

    pub(crate) fn transport_mut(&mut self) -> &mut S {
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
pub(crate) async fn accept<S>(
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
pub(crate) fn add_hsts<B>(response: &mut Response<B>, hsts: Option<HeaderValue>) {
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
