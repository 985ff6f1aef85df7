//! TLS over real sockets with real handshakes: HTTP/1.1 and HTTP/2 (ALPN) through the same
//! pipeline, SNI, certificate hot reload, protocol versions, the redirect listener, HSTS, h2c, and
//! TLS (and mTLS) to the upstream. Every certificate is generated here with rcgen; no key is
//! committed.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderMap, AUTHORIZATION, HOST};
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::version::{TLS12, TLS13};
use rustls::{ClientConfig, ProtocolVersion, RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use authgate::live::Live;
use authgate::tls::{CertStore, TlsListener};

use crate::common::*;

// ---------------------------------------------------------------------------------------------
// Test PKI
// ---------------------------------------------------------------------------------------------

pub(crate) struct Ca {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
    pub(crate) pem: String,
}

pub(crate) struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Ca {
    pub(crate) fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            der: cert.der().clone(),
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    pub(crate) fn leaf(&self, common_name: &str, names: &[&str]) -> Leaf {
        self.leaf_with(common_name, names, |_| {})
    }

    fn leaf_with(
        &self,
        common_name: &str,
        names: &[&str],
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        adjust(&mut params);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

/// A directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "authgate-tls-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub(crate) fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// Writes a leaf as `<name>.crt` and `<name>.key`.
    pub(crate) fn write_leaf(&self, name: &str, leaf: &Leaf) -> (PathBuf, PathBuf) {
        (
            self.write(&format!("{name}.crt"), &leaf.cert_pem),
            self.write(&format!("{name}.key"), &leaf.key_pem),
        )
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn toml_path(path: &Path) -> String {
    path.display().to_string()
}

/// `BASE_CONFIG` with `[server.tls]` on the given files, plus `extra` TOML appended.
fn tls_config(cert: &Path, key: &Path, extra: &str) -> String {
    format!(
        "{BASE_CONFIG}\n[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n{extra}",
        toml_path(cert),
        toml_path(key)
    )
}

// ---------------------------------------------------------------------------------------------
// Gateway and clients
// ---------------------------------------------------------------------------------------------

struct TlsGateway {
    addr: SocketAddr,
    store: Arc<CertStore>,
    live: Arc<Live>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

async fn start_tls_gateway(toml: &str, upstream: SocketAddr) -> TlsGateway {
    let mut config = parse_config(toml);
    if let Some(default) = config.upstream.as_mut() {
        default.authority = upstream.to_string().parse().unwrap();
    }
    start_tls_gateway_with(config).await
}

async fn start_tls_gateway_with(config: authgate::config::Config) -> TlsGateway {
    let tls_config = config.server.tls.clone().expect("a [server.tls] config");
    let live = Live::new(config).unwrap();
    let tls = TlsListener::new(&tls_config, live.metrics()).unwrap();
    let store = tls.store.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(authgate::server::serve_tls(
        listener,
        live.clone(),
        Arc::new(tls),
        async {
            let _ = rx.await;
        },
    ));
    TlsGateway {
        addr,
        store,
        live,
        _shutdown: tx,
    }
}

/// A gateway with TLS on a fresh `gw.test` certificate from a fresh CA, in front of `upstream`,
/// with `extra` TOML appended to the config. The CA (for clients) and the directory holding the
/// certificate files come back with it; the directory must outlive the gateway.
async fn gw_test_gateway(
    name: &str,
    extra: &str,
    upstream: SocketAddr,
) -> (Ca, TempDir, TlsGateway) {
    let ca = Ca::new("test CA");
    let dir = TempDir::new(name);
    let (cert, key) = dir.write_leaf("gw", &ca.leaf("gw.test", &["gw.test"]));
    let config = format!("{}{extra}", tls_config(&cert, &key, ""));
    let gateway = start_tls_gateway(&config, upstream).await;
    (ca, dir, gateway)
}

fn client_config(ca: &CertificateDer<'static>, alpn: &[&[u8]]) -> ClientConfig {
    client_config_versions(ca, alpn, &[&TLS12, &TLS13])
}

fn client_config_versions(
    ca: &CertificateDer<'static>,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let mut config = ClientConfig::builder_with_provider(authgate::core::tls::provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // Full handshakes only: a resumed session reports the certificate it was established with,
    // and the tests look at what the server presents now.
    config.resumption = rustls::client::Resumption::disabled();
    config
}

type ClientTls = tokio_rustls::client::TlsStream<TcpStream>;

async fn tls_connect(addr: SocketAddr, server_name: &str, config: ClientConfig) -> ClientTls {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(server_name.to_string()).unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("TLS handshake timed out")
    .unwrap_or_else(|err| panic!("TLS handshake with {server_name} failed: {err}"))
}

/// The leaf certificate the server presented.
fn served_cert(stream: &ClientTls) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// An HTTP/1.1 or HTTP/2 client connection over any stream.
enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    /// The `error` code of a gateway refusal, `-` for anything else.
    fn error(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(String::from))
            .unwrap_or_else(|| "-".to_string())
    }
}

impl Sender {
    async fn h1<S>(stream: S) -> Sender
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        Sender::H1(sender)
    }

    async fn h2<S>(stream: S) -> Sender
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        Sender::H2(sender)
    }

    /// GET `path` (sent exactly as given, as the origin-form target or `:path`) for `host`.
    async fn get(&mut self, host: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut builder = Request::builder();
        builder = match self {
            // HTTP/1.1: origin-form target and a Host header.
            Sender::H1(_) => builder.uri(path).header(HOST, host),
            // HTTP/2: :scheme, :authority and :path from the URI.
            Sender::H2(_) => builder.uri(format!("https://{host}{path}")),
        };
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(Empty::<Bytes>::new()).unwrap();
        let response = match self {
            Sender::H1(sender) => {
                sender.ready().await.unwrap();
                sender.send_request(request).await.unwrap()
            }
            Sender::H2(sender) => {
                sender.ready().await.unwrap();
                sender.send_request(request).await.unwrap()
            }
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .unwrap_or_default();
        Answer {
            status,
            headers,
            body,
        }
    }
}

/// The forwarded headers that must not depend on the client's HTTP version.
fn forwarded_view(received: &Received) -> Vec<(String, Vec<String>)> {
    [
        "x-user-id",
        "x-forwarded-proto",
        "x-forwarded-for",
        "x-forwarded-host",
        "authorization",
    ]
    .iter()
    .map(|name| {
        (
            name.to_string(),
            received
                .header_values(name)
                .into_iter()
                .map(String::from)
                .collect(),
        )
    })
    .collect()
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 and HTTP/2 over TLS
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn http1_and_http2_over_tls_get_the_same_answers_and_forward_the_same_headers() {
    let backend = Backend::start().await;
    let (ca, _dir, gateway) = gw_test_gateway("same", "", backend.addr).await;

    let alice = bearer(&token_for("alice"));
    let cases: [(&str, &str, Option<&str>, u16); 4] = [
        ("valid token", "/api/alice/tasks", Some(&alice), 200),
        ("missing token", "/api/alice/tasks", None, 401),
        ("cross-user path", "/api/bob/tasks", Some(&alice), 403),
        ("dot segments", "/api/alice/../bob/tasks", Some(&alice), 400),
    ];

    type Outcome = (u16, String, Option<Vec<(String, Vec<String>)>>);
    let mut outcomes: Vec<Vec<Outcome>> = Vec::new();
    for (alpn, expect) in [(&b"http/1.1"[..], "http/1.1"), (&b"h2"[..], "h2")] {
        let stream = tls_connect(gateway.addr, "gw.test", client_config(&ca.der, &[alpn])).await;
        let negotiated = stream.get_ref().1.alpn_protocol().map(|p| p.to_vec());
        assert_eq!(
            negotiated.as_deref(),
            Some(expect.as_bytes()),
            "ALPN outcome"
        );
        let mut sender = if expect == "h2" {
            Sender::h2(stream).await
        } else {
            Sender::h1(stream).await
        };
        let mut results = Vec::new();
        for (name, path, auth, status) in &cases {
            let before = backend.count();
            let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", *a)).collect();
            let answer = sender.get("gw.test", path, &headers).await;
            assert_eq!(answer.status, *status, "{expect}: {name}");
            let forwarded = (backend.count() > before).then(|| {
                let received = backend.received();
                forwarded_view(&received[received.len() - 1])
            });
            assert_eq!(forwarded.is_some(), *status == 200, "{expect}: {name}");
            results.push((answer.status, answer.error(), forwarded));
        }
        outcomes.push(results);
    }
    assert_eq!(
        outcomes[0], outcomes[1],
        "HTTP/1.1 and HTTP/2 must be treated identically"
    );
    let codes: Vec<&str> = outcomes[1]
        .iter()
        .map(|(_, code, _)| code.as_str())
        .collect();
    assert_eq!(codes, ["-", "no_token", "owner_mismatch", "bad_target"]);
    let received = backend.received();
    for request in &received {
        assert_eq!(request.header_values("x-user-id"), ["alice"]);
        assert_eq!(request.header_values("x-forwarded-proto"), ["https"]);
        assert_eq!(request.header_values("x-forwarded-for"), ["127.0.0.1"]);
        assert_eq!(request.header_values("x-forwarded-host"), ["gw.test"]);
        // The backend always gets the exact path that was checked.
        assert_eq!(request.target, "/api/alice/tasks");
    }
    // Via names the client's protocol; that is the one forwarded header allowed to differ.
    assert_eq!(received[0].header_values("via"), ["1.1 authgate"]);
    assert_eq!(received[1].header_values("via"), ["2.0 authgate"]);
}

#[tokio::test]
async fn alpn_without_an_offer_serves_http1_and_an_unknown_protocol_is_refused() {
    let backend = Backend::start().await;
    let (ca, _dir, gateway) = gw_test_gateway("alpn", "", backend.addr).await;

    let stream = tls_connect(gateway.addr, "gw.test", client_config(&ca.der, &[])).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), None);
    let mut sender = Sender::h1(stream).await;
    assert_eq!(sender.get("gw.test", "/health", &[]).await.status, 200);

    let tcp = TcpStream::connect(gateway.addr).await.unwrap();
    let refused = TlsConnector::from(Arc::new(client_config(&ca.der, &[b"spdy/3"])))
        .connect(ServerName::try_from("gw.test").unwrap(), tcp)
        .await;
    assert!(
        refused.is_err(),
        "a client offering only spdy/3 must be refused"
    );
}

#[tokio::test]
async fn http2_authority_conflicting_with_host_is_refused() {
    let backend = Backend::start().await;
    let (ca, _dir, gateway) = gw_test_gateway("authority", "", backend.addr).await;
    let stream = tls_connect(gateway.addr, "gw.test", client_config(&ca.der, &[b"h2"])).await;
    let mut sender = Sender::h2(stream).await;
    let alice = bearer(&token_for("alice"));

    let conflicting = sender
        .get(
            "gw.test",
            "/api/alice/tasks",
            &[("authorization", &alice), ("host", "other.test")],
        )
        .await;
    assert_eq!(conflicting.status, 400);
    assert_eq!(conflicting.error(), "bad_request");
    assert!(String::from_utf8_lossy(&conflicting.body).contains("Host conflicts with :authority"));
    assert_eq!(backend.count(), 0, "nothing may reach the backend");

    // The same authority in both (case aside) is fine.
    let same = sender
        .get(
            "gw.test",
            "/api/alice/tasks",
            &[("authorization", &alice), ("host", "GW.test")],
        )
        .await;
    assert_eq!(same.status, 200);
    assert_eq!(backend.count(), 1);
}

#[tokio::test]
async fn h2c_prior_knowledge_works_on_a_plain_listener() {
    let (backend, gateway) = setup().await;
    let tcp = TcpStream::connect(gateway.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    let alice = bearer(&token_for("alice"));
    for (path, status) in [
        ("/api/alice/tasks", 200),
        ("/api/bob/tasks", 403),
        ("/api/alice/../bob/tasks", 400),
    ] {
        let request = Request::builder()
            .uri(format!("http://gateway.test{path}"))
            .header(AUTHORIZATION, &alice)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.status().as_u16(), status, "{path}");
    }
    let received = backend.only();
    assert_eq!(received.header_values("x-forwarded-proto"), ["http"]);
    assert_eq!(received.header_values("x-user-id"), ["alice"]);
    assert_eq!(received.header_values("via"), ["2.0 authgate"]);
}

// ---------------------------------------------------------------------------------------------
// Protocol versions
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn tls12_and_tls13_are_accepted() {
    let backend = Backend::start().await;
    let (ca, _dir, gateway) = gw_test_gateway("versions", "", backend.addr).await;
    for (version, expect) in [
        (&TLS12, ProtocolVersion::TLSv1_2),
        (&TLS13, ProtocolVersion::TLSv1_3),
    ] {
        let config = client_config_versions(&ca.der, &[b"http/1.1"], &[version]);
        let stream = tls_connect(gateway.addr, "gw.test", config).await;
        assert_eq!(stream.get_ref().1.protocol_version(), Some(expect));
        let mut sender = Sender::h1(stream).await;
        assert_eq!(sender.get("gw.test", "/health", &[]).await.status, 200);
    }
}

/// The server picks the cipher suite by its own order, AES-128-GCM first, whatever the client
/// prefers (rustls' client, like OpenSSL's, lists AES-256-GCM first); a client that offers only
/// AES-256-GCM or ChaCha20-Poly1305 still gets it.
#[tokio::test]
async fn the_server_prefers_aes_128_gcm_and_accepts_the_other_suites() {
    use rustls::CipherSuite::*;
    let backend = Backend::start().await;
    let (ca, _dir, gateway) = gw_test_gateway("suites", "", backend.addr).await;
    for (version, expect) in [
        (&TLS13, TLS13_AES_128_GCM_SHA256),
        (&TLS12, TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
    ] {
        let config = client_config_versions(&ca.der, &[b"http/1.1"], &[version]);
        let offered: Vec<_> = config
            .crypto_provider()
            .cipher_suites
            .iter()
            .map(|suite| suite.suite())
            .collect();
        assert_ne!(
            offered.first(),
            Some(&expect),
            "the client must prefer another suite first"
        );
        let stream = tls_connect(gateway.addr, "gw.test", config).await;
        let chosen = stream
            .get_ref()
            .1
            .negotiated_cipher_suite()
            .map(|s| s.suite());
        assert_eq!(chosen, Some(expect), "{version:?}");
        let mut sender = Sender::h1(stream).await;
        assert_eq!(sender.get("gw.test", "/health", &[]).await.status, 200);
    }
    for only in [TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256] {
        let mut provider = authgate::core::tls::provider().as_ref().clone();
        provider.cipher_suites.retain(|suite| suite.suite() == only);
        let mut roots = RootCertStore::empty();
        roots.add(ca.der.clone()).unwrap();
        let config = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let stream = tls_connect(gateway.addr, "gw.test", config).await;
        let chosen = stream
            .get_ref()
            .1
            .negotiated_cipher_suite()
            .map(|s| s.suite());
        assert_eq!(chosen, Some(only));
    }
}

#[tokio::test]
async fn sessions_resume_with_tickets_over_tls12_and_tls13() {
    let backend = Backend::start().await;
    let (ca, _dir, gateway) = gw_test_gateway("resume", "", backend.addr).await;
    for version in [&TLS12, &TLS13] {
        let mut config = client_config_versions(&ca.der, &[b"http/1.1"], &[version]);
        config.resumption = rustls::client::Resumption::in_memory_sessions(8);
        let mut kinds = Vec::new();
        for _ in 0..2 {
            let stream = tls_connect(gateway.addr, "gw.test", config.clone()).await;
            kinds.push(stream.get_ref().1.handshake_kind());
            // TLS 1.3 tickets arrive after the handshake: a request makes sure they were read.
            let mut sender = Sender::h1(stream).await;
            assert_eq!(sender.get("gw.test", "/health", &[]).await.status, 200);
        }
        assert_eq!(
            kinds,
            [
                Some(rustls::HandshakeKind::Full),
                Some(rustls::HandshakeKind::Resumed)
            ],
            "{version:?}"
        );
    }
}

/// A TLS 1.1 ClientHello: legacy_version 0x0302 and no supported_versions extension, as an old
/// client sends it. rustls clients cannot speak 1.1, so the bytes are written by hand.
/// `legacy_version` is the offered version: 0x0302 for TLS 1.1, 0x0303 for TLS 1.2.
fn client_hello(legacy_version: [u8; 2], server_name: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&legacy_version);
    body.extend_from_slice(&[0x5a; 32]); // random
    body.push(0); // session id
                  // ECDHE-ECDSA and ECDHE-RSA with AES-GCM (TLS 1.2) and AES-CBC (TLS 1.0/1.1), plain RSA, SCSV.
    let suites: [u16; 7] = [0xc02b, 0xc02f, 0xc013, 0xc009, 0x002f, 0x0035, 0x00ff];
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for suite in suites {
        body.extend_from_slice(&suite.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]); // compression: null
    let mut extensions = Vec::new();
    // server_name
    let name = server_name.as_bytes();
    let mut sni = Vec::new();
    sni.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    sni.push(0);
    sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni.extend_from_slice(name);
    extensions.extend_from_slice(&0u16.to_be_bytes());
    extensions.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    extensions.extend_from_slice(&sni);
    // supported_groups: x25519, secp256r1
    extensions.extend_from_slice(&[0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17]);
    // ec_point_formats: uncompressed
    extensions.extend_from_slice(&[0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]);
    // signature_algorithms: ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256, rsa_pkcs1_sha256
    extensions.extend_from_slice(&[
        0x00, 0x0d, 0x00, 0x08, 0x00, 0x06, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01,
    ]);
    body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    body.extend_from_slice(&extensions);

    let mut handshake = vec![0x01]; // ClientHello
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01]; // handshake record, TLS 1.0 record version
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test]
async fn a_tls11_client_is_refused_with_an_alert() {
    let backend = Backend::start().await;
    let (_ca, _dir, gateway) = gw_test_gateway("tls11", "", backend.addr).await;

    let first_record = |hello: Vec<u8>| async move {
        let mut tcp = TcpStream::connect(gateway.addr).await.unwrap();
        tcp.write_all(&hello).await.unwrap();
        let mut answer = vec![0u8; 7];
        tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut answer))
            .await
            .expect("the gateway neither answered nor closed")
            .expect("the gateway closed without a record");
        answer
    };
    // TLS 1.1: an alert record (content type 21), fatal (2), protocol_version (70).
    let answer = first_record(client_hello([0x03, 0x02], "gw.test")).await;
    assert_eq!(
        answer[0], 0x15,
        "expected an alert record, got {answer:02x?}"
    );
    assert_eq!(
        &answer[5..7],
        &[2, 70],
        "expected a fatal protocol_version alert"
    );
    // The same hello offering TLS 1.2 gets a ServerHello: the version alone made the difference.
    let answer = first_record(client_hello([0x03, 0x03], "gw.test")).await;
    assert_eq!(
        (answer[0], answer[5]),
        (0x16, 0x02),
        "expected a ServerHello, got {answer:02x?}"
    );
    assert_eq!(backend.count(), 0);
    let metrics = gateway.live.metrics().render();
    assert!(
        metrics.contains("authgate_tls_handshake_failures_total{reason=\"error\"} 1"),
        "{metrics}"
    );
}

// ---------------------------------------------------------------------------------------------
// SNI
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn sni_selects_the_certificate_and_unknown_names_get_the_default() {
    let ca = Ca::new("test CA");
    let dir = TempDir::new("sni");
    // The default also covers the other names, so that a wrong choice still verifies and the
    // assertion, not the handshake, tells which certificate was served.
    let all = [
        "default.test",
        "api.example.com",
        "x.wild.example.com",
        "unknown.test",
    ];
    let default = ca.leaf("default.test", &all);
    let api = ca.leaf("api.example.com", &["api.example.com"]);
    let wild = ca.leaf("wild", &["*.wild.example.com"]);
    let (cert, key) = dir.write_leaf("default", &default);
    let (api_cert, api_key) = dir.write_leaf("api", &api);
    let (wild_cert, wild_key) = dir.write_leaf("wild", &wild);
    let extra = format!(
        "[[server.tls.sni]]\nname = \"API.example.com\"\ncert = \"{}\"\nkey = \"{}\"\n\
         [[server.tls.sni]]\nname = \"*.wild.example.com\"\ncert = \"{}\"\nkey = \"{}\"\n",
        toml_path(&api_cert),
        toml_path(&api_key),
        toml_path(&wild_cert),
        toml_path(&wild_key),
    );
    let backend = Backend::start().await;
    let gateway = start_tls_gateway(&tls_config(&cert, &key, &extra), backend.addr).await;

    for (name, expected) in [
        ("api.example.com", &api.der),
        ("x.wild.example.com", &wild.der),
        ("default.test", &default.der),
        ("unknown.test", &default.der),
    ] {
        let stream = tls_connect(gateway.addr, name, client_config(&ca.der, &[b"h2"])).await;
        assert!(
            served_cert(&stream) == *expected,
            "SNI {name} got the wrong certificate"
        );
        let mut sender = Sender::h2(stream).await;
        assert_eq!(sender.get(name, "/health", &[]).await.status, 200);
    }
}

// ---------------------------------------------------------------------------------------------
// Certificate hot reload
// ---------------------------------------------------------------------------------------------

async fn wait_for(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn certificate_reload_reaches_new_handshakes_keeps_open_connections_and_refuses_bad_files() {
    let ca = Ca::new("test CA");
    let dir = TempDir::new("reload");
    let first = ca.leaf("first", &["gw.test"]);
    let (cert, key) = dir.write_leaf("gw", &first);
    let backend = Backend::start().await;
    let gateway = start_tls_gateway(&tls_config(&cert, &key, ""), backend.addr).await;
    let watcher = tokio::spawn(authgate::tls::watch_certs(
        gateway.store.clone(),
        Duration::from_millis(50),
    ));
    let config = client_config(&ca.der, &[b"http/1.1"]);
    let served_now = || {
        let config = config.clone();
        async move { served_cert(&tls_connect(gateway.addr, "gw.test", config).await) }
    };

    // An open keep-alive connection, established with the first certificate.
    let old = tls_connect(gateway.addr, "gw.test", config.clone()).await;
    assert!(served_cert(&old) == first.der);
    let mut old = Sender::h1(old).await;
    assert_eq!(old.get("gw.test", "/health", &[]).await.status, 200);

    // Renewal: new handshakes get the new certificate; the open connection keeps working.
    let second = ca.leaf("second", &["gw.test"]);
    dir.write_leaf("gw", &second);
    wait_for("the renewed certificate", async || {
        served_now().await == second.der
    })
    .await;
    assert_eq!(old.get("gw.test", "/health", &[]).await.status, 200);

    // A key that does not match: refused, the second certificate stays.
    let failures = gateway.store.failure_count();
    let stranger = ca.leaf("stranger", &["gw.test"]);
    std::fs::write(&key, &stranger.key_pem).unwrap();
    wait_for("the refused reload", async || {
        gateway.store.failure_count() > failures
    })
    .await;
    assert!(served_now().await == second.der);

    // Not a certificate at all: refused too.
    std::fs::write(&key, &second.key_pem).unwrap();
    std::fs::write(&cert, "this is not PEM\n").unwrap();
    let failures = gateway.store.failure_count();
    wait_for("the refused reload", async || {
        gateway.store.failure_count() > failures
    })
    .await;
    assert!(served_now().await == second.der);
    let errors = gateway.store.reload().unwrap_err();
    assert!(
        errors[0].contains(&cert.display().to_string()) && errors[0].contains("no certificate"),
        "{errors:?}"
    );
    assert_eq!(old.get("gw.test", "/health", &[]).await.status, 200);
    watcher.abort();
    let metrics = gateway.live.metrics().render();
    for line in [
        "authgate_tls_certificate_reloads_total{outcome=\"ok\"}",
        "authgate_tls_certificate_reloads_total{outcome=\"refused\"}",
        "authgate_tls_certificate_expiry_timestamp_seconds{certificate=\"default\"}",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
}

/// The real binary: TLS on the listener, the redirect listener, and a certificate swap picked up
/// after SIGHUP (or the file watch, whichever comes first).
#[test]
fn the_binary_serves_tls_redirects_plain_http_and_reloads_certificates() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let backend = runtime.block_on(Backend::start());
    let (port, redirect_port) = (free_port(), free_port());
    let ca = Ca::new("test CA");
    let dir = TempDir::new("binary");
    let first = ca.leaf("first", &["gw.test"]);
    let (cert, key) = dir.write_leaf("gw", &first);
    let config = tls_config(
        &cert,
        &key,
        "hsts = \"max-age=63072000; includeSubDomains\"\n",
    )
    .replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\"\nredirect_http = \"127.0.0.1:{redirect_port}\""),
    )
    .replace(
        "url = \"http://127.0.0.1:1\"",
        &format!("url = \"http://{}\"", backend.addr),
    );
    let path = dir.write("gateway.toml", &config);
    let check = Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(["check", "--config", path.to_str().unwrap()])
        .env("BETTER_AUTH_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    assert!(String::from_utf8_lossy(&check.stdout).contains("TLS with 1 certificate"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(["--config", path.to_str().unwrap()])
        .env("BETTER_AUTH_SECRET", SECRET)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let redirect_addr = SocketAddr::from(([127, 0, 0, 1], redirect_port));
    wait_until_listening(addr);
    wait_until_listening(redirect_addr);
    let config = client_config(&ca.der, &[b"h2", b"http/1.1"]);
    let get = |path: &'static str| {
        let config = config.clone();
        runtime.block_on(async move {
            let stream = tls_connect(addr, "gw.test", config).await;
            let served = served_cert(&stream);
            let mut sender = Sender::h2(stream).await;
            let alice = bearer(&token_for("alice"));
            let answer = sender
                .get("gw.test", path, &[("authorization", &alice)])
                .await;
            (answer, served)
        })
    };
    let (answer, served) = get("/api/alice/tasks");
    assert_eq!(answer.status, 200);
    assert!(served == first.der);
    assert_eq!(
        answer.headers["strict-transport-security"],
        "max-age=63072000; includeSubDomains"
    );
    assert_eq!(backend.only().header_values("x-forwarded-proto"), ["https"]);

    // Plain HTTP gets a 308 to the same host and path on the TLS port; nothing is forwarded.
    let mut plain = std::net::TcpStream::connect(redirect_addr).unwrap();
    write!(
        plain,
        "GET /api/alice/tasks?page=2 HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    plain.read_to_end(&mut raw).unwrap();
    let redirect = parse_response(&raw);
    assert_eq!(redirect.status, 308);
    assert_eq!(
        redirect.header("location"),
        Some(format!("https://gw.test:{port}/api/alice/tasks?page=2").as_str())
    );
    assert_eq!(redirect.header("strict-transport-security"), None);
    assert_eq!(backend.count(), 1);

    let second = ca.leaf("second", &["gw.test"]);
    dir.write_leaf("gw", &second);
    assert!(Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while get("/health").1 != second.der {
        if Instant::now() > deadline {
            let _ = child.kill();
            let mut logs = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut logs);
            panic!("the renewed certificate was not served; logs:\n{logs}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0), "{logs}");
    assert!(logs.contains("certificates reloaded"), "{logs}");
}

// ---------------------------------------------------------------------------------------------
// Redirect and HSTS
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_redirect_listener_answers_308_and_forwards_nothing() {
    let backend = Backend::start().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(authgate::runtime::redirect::serve_redirect(
        listener,
        authgate::config::LimitsConfig::default(),
        443,
        async {
            let _ = rx.await;
        },
    ));
    let answer = request(addr, "GET", "/api/alice/tasks?x=1", &[], b"").await;
    assert_eq!(answer.status, 308);
    assert_eq!(
        answer.header("location"),
        Some("https://gateway.test/api/alice/tasks?x=1")
    );
    let answer = request(addr, "POST", "/api/alice/tasks", &[], b"{}").await;
    assert_eq!(answer.status, 308, "308 keeps the method and body");
    // No usable Host: 400, never a redirect to somewhere made up.
    let answer = send_raw(addr, b"GET / HTTP/1.0\r\n\r\n").await;
    assert_eq!(answer.status, 400);
    let answer = send_raw(
        addr,
        b"GET / HTTP/1.1\r\nHost: user@evil.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, 400);
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn hsts_is_added_on_tls_only_when_configured() {
    let ca = Ca::new("test CA");
    let dir = TempDir::new("hsts");
    let (cert, key) = dir.write_leaf("gw", &ca.leaf("gw.test", &["gw.test"]));
    let backend = Backend::start().await;
    let with = start_tls_gateway(
        &tls_config(
            &cert,
            &key,
            "hsts = \"max-age=63072000; includeSubDomains\"\n",
        ),
        backend.addr,
    )
    .await;
    let without = start_tls_gateway(&tls_config(&cert, &key, ""), backend.addr).await;
    for (gateway, expected) in [
        (&with, Some("max-age=63072000; includeSubDomains")),
        (&without, None),
    ] {
        let stream = tls_connect(gateway.addr, "gw.test", client_config(&ca.der, &[b"h2"])).await;
        let mut sender = Sender::h2(stream).await;
        // On forwarded responses and on the gateway's own refusals alike.
        for path in ["/health", "/api/alice/tasks"] {
            let answer = sender.get("gw.test", path, &[]).await;
            assert_eq!(
                answer
                    .headers
                    .get("strict-transport-security")
                    .map(|v| v.to_str().unwrap()),
                expected,
                "{path}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// TLS to the upstream
// ---------------------------------------------------------------------------------------------

/// A rustls backend recording the X-User-Id it got; with `client_ca`, it requires a client
/// certificate issued by it.
async fn start_tls_backend(
    leaf: &Leaf,
    client_ca: Option<&CertificateDer<'static>>,
) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let (addr, seen, _) = start_tls_backend_logged(leaf, client_ca).await;
    (addr, seen)
}

/// (TLS connection number, method, body) of each request a TLS backend received.
type TlsSeen = Arc<Mutex<Vec<(usize, String, Vec<u8>)>>>;

/// `start_tls_backend`, also recording which connection each request came on, and its body.
async fn start_tls_backend_logged(
    leaf: &Leaf,
    client_ca: Option<&CertificateDer<'static>>,
) -> (SocketAddr, Arc<Mutex<Vec<String>>>, TlsSeen) {
    let chain = vec![leaf.der.clone()];
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let builder = ServerConfig::builder_with_provider(authgate::core::tls::provider())
        .with_protocol_versions(&[&TLS12, &TLS13])
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            roots.add(ca.clone()).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                authgate::core::tls::provider(),
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(chain, key).unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let details: TlsSeen = Arc::new(Mutex::new(Vec::new()));
    let (log, detail_log) = (seen.clone(), details.clone());
    tokio::spawn(async move {
        let mut connections = 0;
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, log, detail_log) = (acceptor.clone(), log.clone(), detail_log.clone());
            let connection = {
                connections += 1;
                connections
            };
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let (log, detail_log) = (log.clone(), detail_log.clone());
                    async move {
                        let user = request
                            .headers()
                            .get("x-user-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                            .to_string();
                        log.lock().unwrap().push(user);
                        let method = request.method().to_string();
                        if request.uri().path().ends_with("/slow") {
                            // A backend that takes its time before reading the body, so the
                            // gateway's writes back up into its TLS layer.
                            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                        }
                        let body = request
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes().to_vec())
                            .unwrap_or_default();
                        detail_log.lock().unwrap().push((connection, method, body));
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                            Bytes::from_static(b"{\"ok\":true}"),
                        )))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen, details)
}

/// The base config with an https upstream at `backend` and the given upstream keys.
fn https_upstream_config(backend: SocketAddr, upstream_keys: &str) -> authgate::config::Config {
    let toml = BASE_CONFIG.replace(
        "url = \"http://127.0.0.1:1\"",
        &format!("url = \"https://{backend}\"\n{upstream_keys}"),
    );
    parse_config(&toml)
}

async fn get_plain(
    config: authgate::config::Config,
    path: &str,
) -> (u16, tokio::sync::oneshot::Sender<()>) {
    let live = Live::new(config).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(authgate::server::serve(listener, live, async {
        let _ = rx.await;
    }));
    let answer = request(
        addr,
        "GET",
        path,
        &[("Authorization", &bearer(&token_for("alice")))],
        b"",
    )
    .await;
    (answer.status, tx)
}

#[tokio::test]
async fn https_upstream_is_verified_against_ca_file_and_a_wrong_ca_gets_502() {
    let backend_ca = Ca::new("backend CA");
    let other_ca = Ca::new("some other CA");
    let dir = TempDir::new("upstream");
    let ca_file = dir.write("backend-ca.pem", &backend_ca.pem);
    let other_ca_file = dir.write("other-ca.pem", &other_ca.pem);
    let leaf = backend_ca.leaf("backend", &["127.0.0.1", "localhost"]);
    let (backend, seen) = start_tls_backend(&leaf, None).await;

    let config = https_upstream_config(backend, &format!("ca_file = \"{}\"", toml_path(&ca_file)));
    let (status, _gateway) = get_plain(config, "/api/alice/tasks").await;
    assert_eq!(status, 200);
    assert_eq!(*seen.lock().unwrap(), ["alice"]);

    // The backend's certificate is not signed by the configured CA: 502, nothing delivered.
    let config = https_upstream_config(
        backend,
        &format!("ca_file = \"{}\"", toml_path(&other_ca_file)),
    );
    let (status, _gateway) = get_plain(config, "/api/alice/tasks").await;
    assert_eq!(status, 502);
    // The default trust store (webpki-roots) does not know a private CA either.
    let (status, _gateway) =
        get_plain(https_upstream_config(backend, ""), "/api/alice/tasks").await;
    assert_eq!(status, 502);
    assert_eq!(seen.lock().unwrap().len(), 1);

    // insecure_skip_verify: explicit, and then the wrong CA no longer matters.
    let config = https_upstream_config(backend, "insecure_skip_verify = true");
    assert!(
        config
            .upstream
            .as_ref()
            .unwrap()
            .tls
            .as_ref()
            .unwrap()
            .insecure
    );
    let (status, _gateway) = get_plain(config, "/api/alice/tasks").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn https_upstream_with_a_client_certificate_mtls() {
    let backend_ca = Ca::new("backend CA");
    let client_ca = Ca::new("client CA");
    let dir = TempDir::new("mtls");
    let ca_file = dir.write("backend-ca.pem", &backend_ca.pem);
    let leaf = backend_ca.leaf("backend", &["127.0.0.1"]);
    let (client_cert, client_key) = dir.write_leaf("client", &client_ca.leaf("authgate", &[]));
    let (backend, seen) = start_tls_backend(&leaf, Some(&client_ca.der)).await;

    let with_identity = https_upstream_config(
        backend,
        &format!(
            "ca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"",
            toml_path(&ca_file),
            toml_path(&client_cert),
            toml_path(&client_key)
        ),
    );
    let (status, _gateway) = get_plain(with_identity, "/api/alice/tasks").await;
    assert_eq!(status, 200);
    assert_eq!(*seen.lock().unwrap(), ["alice"]);

    let without = https_upstream_config(backend, &format!("ca_file = \"{}\"", toml_path(&ca_file)));
    let (status, _gateway) = get_plain(without, "/api/alice/tasks").await;
    assert_eq!(status, 502, "the backend requires a client certificate");
    assert_eq!(seen.lock().unwrap().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Config errors and warnings
// ---------------------------------------------------------------------------------------------

fn config_error(toml: &str) -> String {
    let env = |name: &str| (name == "BETTER_AUTH_SECRET").then(|| SECRET.to_string());
    match authgate::config::Config::parse(toml, "test.toml", &env) {
        Ok(_) => panic!("config accepted:\n{toml}"),
        Err(err) => err.to_string(),
    }
}

#[tokio::test]
async fn tls_config_errors_name_the_file_line_key_and_problem() {
    let ca = Ca::new("test CA");
    let dir = TempDir::new("errors");
    let (cert, key) = dir.write_leaf("gw", &ca.leaf("gw.test", &["gw.test"]));
    let (_, other_key) = dir.write_leaf("other", &ca.leaf("other", &["other.test"]));
    let missing = dir.0.join("missing.crt");
    let garbage = dir.write("garbage.pem", "hello\n");
    let line_of =
        |toml: &str, needle: &str| toml.lines().position(|l| l.contains(needle)).unwrap() + 1;

    let toml = tls_config(&missing, &key, "");
    let err = config_error(&toml);
    assert_eq!(
        err,
        format!(
            "test.toml:{}: `server.tls.cert`: cannot read {}: No such file or directory (os error 2)",
            line_of(&toml, "missing.crt"),
            missing.display()
        )
    );

    let toml = tls_config(&cert, &other_key, "");
    let err = config_error(&toml);
    assert!(
        err.starts_with(&format!(
            "test.toml:{}: `server.tls.key`: ",
            line_of(&toml, "other.key")
        )) && err.contains("the private key does not match the certificate"),
        "{err}"
    );

    // A certificate file given as the key: there is no key in it.
    let err = config_error(&tls_config(&cert, &cert, ""));
    assert!(
        err.contains("`server.tls.key`") && err.contains("no private key found"),
        "{err}"
    );
    let err = config_error(&tls_config(&garbage, &key, ""));
    assert!(
        err.contains("`server.tls.cert`") && err.contains("no certificate found"),
        "{err}"
    );

    let sni = |name: &str| {
        tls_config(
            &cert,
            &key,
            &format!(
                "[[server.tls.sni]]\nname = \"{name}\"\ncert = \"{}\"\nkey = \"{}\"\n",
                toml_path(&cert),
                toml_path(&key)
            ),
        )
    };
    let err = config_error(&sni("not a name"));
    assert!(err.contains("`server.tls.sni[0].name`"), "{err}");
    let err = config_error(&sni("a.*.example.com"));
    assert!(err.contains("not a DNS name"), "{err}");

    let err = config_error(&tls_config(&cert, &key, "hsts = \"includeSubDomains\"\n"));
    assert!(
        err.contains("`server.tls.hsts`") && err.contains("max-age"),
        "{err}"
    );

    let err = config_error(&BASE_CONFIG.replace(
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:0\"\nredirect_http = \"127.0.0.1:8081\"",
    ));
    assert!(
        err.contains("`server.redirect_http`") && err.contains("[server.tls]"),
        "{err}"
    );

    let upstream = |url: &str, keys: &str| {
        BASE_CONFIG.replace(
            "url = \"http://127.0.0.1:1\"",
            &format!("url = \"{url}\"\n{keys}"),
        )
    };
    let err = config_error(&upstream(
        "http://127.0.0.1:1",
        &format!("ca_file = \"{}\"", toml_path(&cert)),
    ));
    assert!(
        err.contains("`upstream.ca_file`") && err.contains("https"),
        "{err}"
    );
    let err = config_error(&upstream(
        "https://127.0.0.1:1",
        &format!("client_cert = \"{}\"", toml_path(&cert)),
    ));
    assert!(
        err.contains("`upstream.client_cert`") && err.contains("client_key"),
        "{err}"
    );
    let err = config_error(&upstream(
        "https://127.0.0.1:1",
        &format!(
            "ca_file = \"{}\"\ninsecure_skip_verify = true",
            toml_path(&cert)
        ),
    ));
    assert!(
        err.contains("`upstream.ca_file`") && err.contains("choose one"),
        "{err}"
    );
    let err = config_error(&upstream(
        "https://127.0.0.1:1",
        &format!("ca_file = \"{}\"", toml_path(&missing)),
    ));
    assert!(
        err.contains("`upstream.ca_file`") && err.contains("missing.crt"),
        "{err}"
    );
    let err = config_error(&upstream(
        "https://127.0.0.1:1",
        &format!(
            "client_cert = \"{}\"\nclient_key = \"{}\"",
            toml_path(&cert),
            toml_path(&other_key)
        ),
    ));
    assert!(
        err.contains("`upstream.client_key`") && err.contains("does not match"),
        "{err}"
    );
    let err = config_error(&upstream("ftp://127.0.0.1:1", ""));
    assert!(err.contains("http or https"), "{err}");
}

#[test]
fn certificate_paths_are_relative_to_the_config_file() {
    let ca = Ca::new("test CA");
    let dir = TempDir::new("relative");
    std::fs::create_dir_all(dir.0.join("certs")).unwrap();
    let leaf = ca.leaf("gw.test", &["gw.test"]);
    dir.write("certs/gateway.crt", &leaf.cert_pem);
    dir.write("certs/gateway.key", &leaf.key_pem);
    let path = dir.write(
        "gateway.toml",
        &tls_config(
            Path::new("certs/gateway.crt"),
            Path::new("certs/gateway.key"),
            "",
        ),
    );
    let env = |name: &str| (name == "BETTER_AUTH_SECRET").then(|| SECRET.to_string());
    let config = authgate::config::Config::load_with(&path, &env).unwrap();
    let tls = config.server.tls.unwrap();
    assert_eq!(tls.default.cert, dir.0.join("certs/gateway.crt"));
    assert!(tls.default.loaded.key.cert[0] == leaf.der);
}

#[test]
fn an_expired_certificate_loads_with_a_warning() {
    let ca = Ca::new("test CA");
    let dir = TempDir::new("expired");
    let expired = ca.leaf_with("old", &["gw.test"], |params| {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let (cert, key) = dir.write_leaf("old", &expired);
    let loaded = authgate::core::tls::load_cert_pair(&cert, &key).unwrap();
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert!(
        loaded.warnings[0].contains("expired") && loaded.warnings[0].contains("2021-01-01"),
        "{:?}",
        loaded.warnings
    );
    // It still loads as a config: refusing it would turn a missed renewal into an outage.
    parse_config(&tls_config(&cert, &key, ""));

    assert_eq!(loaded.not_after.as_deref(), Some("2021-01-01T00:00:00Z"));

    let fresh = ca.leaf("fresh", &["gw.test"]);
    let (cert, key) = dir.write_leaf("fresh", &fresh);
    assert!(authgate::core::tls::load_cert_pair(&cert, &key)
        .unwrap()
        .warnings
        .is_empty());
}

/// An https JWKS URL is verified against the Mozilla roots: a server whose certificate chains to a
/// private CA is refused, so no keys are taken from it (fail closed: 503, never a key).
#[tokio::test]
async fn https_jwks_with_an_untrusted_certificate_yields_no_keys() {
    let ca = Ca::new("private test CA");
    let leaf = ca.leaf("127.0.0.1", &["127.0.0.1"]);
    let (jwks_addr, seen) = start_tls_backend(&leaf, None).await;
    let routes = &BASE_CONFIG[BASE_CONFIG.find("[[route]]").unwrap()..];
    let config = format!(
        "[upstream]\nurl = \"http://127.0.0.1:1\"\n[auth]\njwks_url = \"https://{jwks_addr}/jwks\"\nalgorithms = [\"EdDSA\"]\njwks_cooldown = \"200ms\"\njwks_timeout = \"2s\"\n{routes}"
    );
    let backend = Backend::start().await;
    let gateway = start_gateway(&config, backend.addr).await;
    let key = crate::keys::TestKey::generate("EdDSA", "k1");
    let token = key.token(&serde_json::json!({"sub": "alice", "exp": now() + 900}));
    let response = request(
        gateway.addr,
        "GET",
        "/api/alice/tasks",
        &[("Authorization", &bearer(&token))],
        b"",
    )
    .await;
    assert_eq!(response.status, 503);
    let remote = &gateway.gateway.jwks_sources()[0];
    assert!(
        remote
            .fetches_failed
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    assert!(remote.keys().is_none());
    assert!(
        seen.lock().unwrap().is_empty(),
        "no request got through the failed handshake"
    );
    assert_eq!(backend.count(), 0);
}

/// The lean client over TLS: one pooled TLS connection carries sequential requests, and request
/// bodies (sized and chunked) arrive whole through it.
#[tokio::test]
async fn https_upstream_connections_are_pooled_and_carry_bodies() {
    let backend_ca = Ca::new("backend CA");
    let dir = TempDir::new("upstream-pool");
    let ca_file = dir.write("backend-ca.pem", &backend_ca.pem);
    let leaf = backend_ca.leaf("backend", &["127.0.0.1", "localhost"]);
    let (backend, seen, details) = start_tls_backend_logged(&leaf, None).await;
    let config = https_upstream_config(backend, &format!("ca_file = \"{}\"", toml_path(&ca_file)));
    let gateway = start_gateway_with(config, backend).await;
    let addr = gateway.addr;
    let auth = bearer(&token_for("alice"));
    let json = ("Content-Type", "application/json");
    let authorization = [("Authorization", auth.as_str())];
    let get_tasks = || request(addr, "GET", "/api/alice/tasks", &authorization, b"");
    assert_eq!(get_tasks().await.status, 200);
    let sized = request(
        addr,
        "POST",
        "/api/alice/tasks",
        &[("Authorization", &auth), json],
        b"{\"title\":\"over tls\"}",
    )
    .await;
    assert_eq!(sized.status, 200);
    let chunked = send_raw(
        addr,
        format!(
            "POST /api/alice/tasks HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\
             Authorization: {auth}\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\n\r\n6\r\n{{\"titl\r\nB\r\ne\":\"chunk\"}}\r\n0\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(chunked.status, 200);
    assert_eq!(get_tasks().await.status, 200);

    assert_eq!(*seen.lock().unwrap(), ["alice"; 4]);
    let details = details.lock().unwrap().clone();
    let summary: Vec<(usize, &str, &[u8])> = details
        .iter()
        .map(|(connection, method, body)| (*connection, method.as_str(), body.as_slice()))
        .collect();
    assert_eq!(
        summary,
        [
            (1, "GET", &b""[..]),
            (1, "POST", &b"{\"title\":\"over tls\"}"[..]),
            (1, "POST", &b"{\"title\":\"chunk\"}"[..]),
            (1, "GET", &b""[..]),
        ],
        "one pooled TLS connection, bodies intact"
    );
}

/// A large upload to an https backend: the last bytes must leave the TLS layer (flushed) before
/// the gateway waits for the answer, or backend and gateway wait on each other until a 504.
#[tokio::test]
async fn a_large_upload_to_an_https_upstream_arrives_whole() {
    let backend_ca = Ca::new("backend CA");
    let dir = TempDir::new("upstream-upload");
    let ca_file = dir.write("backend-ca.pem", &backend_ca.pem);
    let leaf = backend_ca.leaf("backend", &["127.0.0.1", "localhost"]);
    let (backend, _, details) = start_tls_backend_logged(&leaf, None).await;
    let mut config =
        https_upstream_config(backend, &format!("ca_file = \"{}\"", toml_path(&ca_file)));
    if let Some(upstream) = config.upstream.as_mut() {
        upstream.timeout = std::time::Duration::from_secs(5);
    }
    config.limits.max_body_bytes = 32 << 20;
    let gateway = start_gateway_with(config, backend).await;
    let addr = gateway.addr;
    let auth = bearer(&token_for("alice"));
    for size in [16 << 20, 4 << 20, 300_001, 70_000] {
        let body: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
        let answer = request(
            addr,
            "POST",
            "/api/alice/tasks/slow",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            &body,
        )
        .await;
        assert_eq!(answer.status, 200, "{size} bytes");
        let received = details.lock().unwrap().last().unwrap().2.clone();
        assert_eq!(received.len(), size, "all {size} bytes arrived");
        assert!(received == body, "{size} bytes intact");
    }
}

/// A TLS 1.2 ClientHello that names `host` in its SNI extension and offers one cipher suite and
/// nothing else: enough for rustls to parse the extensions (and judge the name), not enough for a
/// handshake.
fn client_hello_with_sni(host: &str) -> Vec<u8> {
    let name = host.as_bytes();
    let mut sni = Vec::new();
    sni.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes()); // server_name_list
    sni.push(0); // host_name
    sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni.extend_from_slice(name);
    let mut extensions = vec![0, 0]; // server_name
    extensions.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    extensions.extend_from_slice(&sni);
    let mut hello = vec![3, 3]; // client_version TLS 1.2
    hello.extend_from_slice(&[7; 32]); // random
    hello.push(0); // no session id
    hello.extend_from_slice(&[0, 2, 0xc0, 0x2b]); // ECDHE-ECDSA-AES128-GCM-SHA256
    hello.extend_from_slice(&[1, 0]); // null compression
    hello.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    hello.extend_from_slice(&extensions);
    let mut handshake = vec![1]; // client_hello
    handshake.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&hello);
    let mut record = vec![22, 3, 1]; // handshake record
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// The real binary with its default log filter: clients that present an IP address as SNI (wrk
/// does, on every connection) make rustls warn "Illegal SNI extension"; at the default level that
/// must not reach the log, or any client could write one line per handshake. With
/// `RUST_LOG=info,rustls=warn` the same handshakes do log it, which shows the test would see the
/// flood. Nothing reaches the backend either way.
#[test]
fn client_chosen_sni_does_not_write_a_log_line_per_handshake_by_default() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let backend = runtime.block_on(Backend::start());
    let ca = Ca::new("test CA");
    let dir = TempDir::new("sni-log");
    let (cert, key) = dir.write_leaf("gw", &ca.leaf("gw", &["gw.test"]));
    for rust_log in [None, Some("info,rustls=warn")] {
        let port = free_port();
        let config = on_port_before(&tls_config(&cert, &key, ""), port, backend.addr);
        let path = dir.write("gateway.toml", &config);
        let mut command = Command::new(env!("CARGO_BIN_EXE_authgate"));
        command
            .args(["--config", path.to_str().unwrap()])
            .env("BETTER_AUTH_SECRET", SECRET)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(filter) = rust_log {
            command.env("RUST_LOG", filter);
        }
        let child = command.spawn().unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_until_listening(addr);
        for _ in 0..20 {
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            stream
                .write_all(&client_hello_with_sni("127.0.0.1"))
                .unwrap();
            // The gateway answers with an alert and closes: read until it does.
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer);
            assert_eq!(answer.first(), Some(&21), "a TLS alert record: {answer:?}");
        }
        assert!(Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success());
        let output = child.wait_with_output().unwrap();
        let log = String::from_utf8_lossy(&output.stderr);
        let sni_lines = log.matches("Illegal SNI").count();
        match rust_log {
            None => assert_eq!(sni_lines, 0, "{log}"),
            Some(_) => assert_eq!(sni_lines, 20, "{log}"),
        }
    }
    assert!(backend.received().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Parking idle HTTP/1.1 connections over TLS (src/runtime/keepalive.rs)
// ---------------------------------------------------------------------------------------------

/// Comfortably longer than `PARK_AFTER`.
const QUIET: Duration = Duration::from_millis(250);

fn parked_gauge(gateway: &TlsGateway) -> i64 {
    gateway.live.metrics().parked_connections.get()
}

/// Waits (up to 5 s) until `want` connections are parked.
async fn wait_parked(gateway: &TlsGateway, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while parked_gauge(gateway) != want {
        assert!(
            Instant::now() < deadline,
            "parked connections: {}, expected {want}",
            parked_gauge(gateway)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads one HTTP/1.1 response with a `Content-Length` body off `stream`.
async fn read_one_response(stream: &mut ClientTls) -> RawResponse {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "closed mid-head");
        raw.push(byte[0]);
    }
    let length: usize = parse_response(&raw)
        .header("content-length")
        .unwrap()
        .parse()
        .unwrap();
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    raw.extend_from_slice(&body);
    parse_response(&raw)
}

fn get_request(target: &str, token: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: gw.test\r\nAuthorization: Bearer {token}\r\n\r\n")
        .into_bytes()
}

/// An idle HTTP/1.1 connection over TLS parks (drops hyper's buffers, keeps the TLS session)
/// and serves its next request from where it left off, with the owner rule intact; an HTTP/2
/// connection (ALPN h2) never parks.
#[tokio::test]
async fn idle_tls_http1_connections_park_and_http2_ones_do_not() {
    let backend = Backend::start().await;
    let (ca, _dir, gateway) = gw_test_gateway("park", "", backend.addr).await;
    let alice = bearer(&token_for("alice"));

    let h2 = tls_connect(gateway.addr, "gw.test", client_config(&ca.der, &[b"h2"])).await;
    let mut h2 = Sender::h2(h2).await;
    let answer = h2
        .get("gw.test", "/api/alice/tasks", &[("authorization", &alice)])
        .await;
    assert_eq!(answer.status, 200);
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        parked_gauge(&gateway),
        0,
        "an HTTP/2 connection does not park"
    );

    let token = token_for("alice");
    let mut h1 = tls_connect(
        gateway.addr,
        "gw.test",
        client_config(&ca.der, &[b"http/1.1"]),
    )
    .await;
    h1.write_all(&get_request("/api/alice/tasks/1", &token))
        .await
        .unwrap();
    assert_eq!(read_one_response(&mut h1).await.status, 200);
    wait_parked(&gateway, 1).await;

    h1.write_all(&get_request("/api/bob/tasks", &token))
        .await
        .unwrap();
    assert_eq!(read_one_response(&mut h1).await.status, 403);
    h1.write_all(&get_request("/api/alice/tasks/2", &token))
        .await
        .unwrap();
    assert_eq!(read_one_response(&mut h1).await.status, 200);

    let targets: Vec<String> = backend
        .received()
        .iter()
        .map(|r| r.target.clone())
        .collect();
    assert_eq!(
        targets,
        [
            "/api/alice/tasks",
            "/api/alice/tasks/1",
            "/api/alice/tasks/2"
        ],
        "the 403 reached nobody"
    );
    assert!(backend
        .received()
        .iter()
        .all(|r| r.header_values("x-user-id") == ["alice"]));
}

/// A parked TLS connection woken by part of a TLS record (no plaintext yet) must not park again
/// while the rest is on its way: bytes from the socket count as activity even before they
/// decrypt to anything, or a client could trickle records forever past every request timer.
/// The request completes once the rest arrives.
#[tokio::test]
async fn a_tls_record_split_across_a_park_keeps_the_connection_awake() {
    let backend = Backend::start().await;
    let (ca, _dir, gateway) = gw_test_gateway("park-split", "", backend.addr).await;
    let token = token_for("alice");

    let mut stream = tls_connect(
        gateway.addr,
        "gw.test",
        client_config(&ca.der, &[b"http/1.1"]),
    )
    .await;
    stream
        .write_all(&get_request("/api/alice/tasks/1", &token))
        .await
        .unwrap();
    assert_eq!(read_one_response(&mut stream).await.status, 200);
    wait_parked(&gateway, 1).await;

    // Encrypt the next request by hand and send only its first 10 bytes.
    let mut record = Vec::new();
    {
        let (_, connection) = stream.get_mut();
        std::io::Write::write_all(
            &mut connection.writer(),
            &get_request("/api/alice/tasks/2", &token),
        )
        .unwrap();
        while connection.wants_write() {
            connection.write_tls(&mut record).unwrap();
        }
    }
    assert!(record.len() > 10);
    let (tcp, _) = stream.get_mut();
    tcp.write_all(&record[..10]).await.unwrap();
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        parked_gauge(&gateway),
        0,
        "woken by part of a record, the connection stays awake"
    );
    assert_eq!(
        backend.count(),
        1,
        "nothing forwarded from a partial record"
    );

    let (tcp, _) = stream.get_mut();
    tcp.write_all(&record[10..]).await.unwrap();
    assert_eq!(read_one_response(&mut stream).await.status, 200);
    let received = backend.received();
    assert_eq!(received.last().unwrap().target, "/api/alice/tasks/2");
    assert_eq!(
        received.last().unwrap().header_values("x-user-id"),
        ["alice"]
    );
}

/// A TLS response larger than the socket buffers, read slowly, arrives whole, and the connection
/// parks afterwards. This guards the slow-reader path; it does not reproduce, here, the race the
/// flush before parking closes (the client pausing just as the body's last records sit in
/// rustls), which needs the kernel's buffers to end within 64 KiB of the body's end.
#[tokio::test]
async fn a_slowly_read_large_tls_response_arrives_whole_before_parking() {
    const SIZE: usize = 8 * 1024 * 1024;
    let backend = big_body_backend(SIZE).await;
    let (ca, _dir, gateway) = gw_test_gateway("park-slow", "", backend).await;
    let token = token_for("alice");
    let mut stream = tls_connect(
        gateway.addr,
        "gw.test",
        client_config(&ca.der, &[b"http/1.1"]),
    )
    .await;
    for round in 0..2 {
        stream
            .write_all(&get_request("/api/alice/tasks", &token))
            .await
            .unwrap();
        // Let the buffers fill and the gateway wait on the socket for longer than PARK_AFTER.
        tokio::time::sleep(QUIET).await;
        let response =
            tokio::time::timeout(Duration::from_secs(10), read_one_response(&mut stream))
                .await
                .expect("the rest of the response never came");
        assert_eq!(response.status, 200, "round {round}");
        assert_eq!(response.body.len(), SIZE, "round {round}");
        assert_eq!(
            first_unlike_big_body(&response.body),
            None,
            "round {round}: body differs at this offset"
        );
        wait_parked(&gateway, 1).await;
    }
}

/// A parked TLS connection closed by the keep-alive limit ends its session with close_notify:
/// the client reads a clean end of stream, not a truncation.
#[tokio::test]
async fn a_parked_tls_connection_closes_with_close_notify() {
    let backend = Backend::start().await;
    let limits = "\n[limits]\nheader_read_timeout = \"500ms\"\n";
    let (ca, _dir, gateway) = gw_test_gateway("park-close", limits, backend.addr).await;
    let mut stream = tls_connect(
        gateway.addr,
        "gw.test",
        client_config(&ca.der, &[b"http/1.1"]),
    )
    .await;
    stream
        .write_all(&get_request("/api/alice/tasks", &token_for("alice")))
        .await
        .unwrap();
    assert_eq!(read_one_response(&mut stream).await.status, 200);
    wait_parked(&gateway, 1).await;
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
        .await
        .expect("the parked connection was not closed by the keep-alive limit");
    assert_eq!(closed.unwrap(), 0, "a clean close_notify, nothing else");
    assert_eq!(parked_gauge(&gateway), 0);
    assert_eq!(backend.count(), 1);
}
