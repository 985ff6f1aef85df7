//! Shared test fixtures: a recording backend, an in-process gateway, a raw HTTP/1.1 client and
//! token builders. Everything runs on real sockets on 127.0.0.1.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use authgate::config::Config;
use authgate::live::Live;
use authgate::pipeline::Gateway;

pub const SECRET: &str = "integration-test-secret-0123456789abcdef";

/// A request as the backend received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// The request-target bytes exactly as they arrived at the backend.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Trailer fields of a chunked body.
    pub trailers: Vec<(String, String)>,
}

impl Received {
    /// Every value of a header, by exact lower-case name.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Every header whose name, lower-cased with `_` read as `-`, equals `normalized`.
    pub fn headers_normalized(&self, normalized: &str) -> Vec<(&str, &str)> {
        self.headers
            .iter()
            .filter(|(n, _)| n.to_ascii_lowercase().replace('_', "-") == normalized)
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }
}

/// A backend that records every request and answers 200 `{"ok":true}` after `delay`.
#[derive(Clone)]
pub struct Backend {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Backend {
    pub async fn start() -> Backend {
        Backend::start_with_delay(Duration::ZERO).await
    }

    pub async fn start_with_delay(delay: Duration) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let log = log.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let log = log.clone();
                        async move {
                            let (parts, body) = request.into_parts();
                            let (body, trailers): (Bytes, Vec<(String, String)>) =
                                match body.collect().await {
                                    Ok(collected) => {
                                        let trailers = collected
                                            .trailers()
                                            .map(|map| {
                                                map.iter()
                                                    .map(|(n, v)| {
                                                        (
                                                            n.to_string(),
                                                            String::from_utf8_lossy(v.as_bytes())
                                                                .into_owned(),
                                                        )
                                                    })
                                                    .collect()
                                            })
                                            .unwrap_or_default();
                                        (collected.to_bytes(), trailers)
                                    }
                                    Err(_) => (Bytes::new(), Vec::new()),
                                };
                            let headers = parts
                                .headers
                                .iter()
                                .map(|(n, v)| {
                                    (
                                        n.as_str().to_string(),
                                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                    )
                                })
                                .collect();
                            log.lock().unwrap().push(Received {
                                method: parts.method.to_string(),
                                target: parts.uri.to_string(),
                                headers,
                                body: body.to_vec(),
                                trailers,
                            });
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            let mut response =
                                Response::new(Full::new(Bytes::from_static(b"{\"ok\":true}")));
                            response
                                .headers_mut()
                                .insert("content-type", "application/json".parse().unwrap());
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend { addr, received }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// The one request the backend received; panics (fails the test) otherwise.
    pub fn only(&self) -> Received {
        let received = self.received();
        assert_eq!(
            received.len(),
            1,
            "expected exactly one forwarded request, got {received:#?}"
        );
        received.into_iter().next().unwrap()
    }
}

/// The demo config used by most tests, with the repo's routes.
pub const BASE_CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"

[upstream]
url = "http://127.0.0.1:1"
timeout = "2s"

[auth]
algorithms = ["HS256"]
secret_env = "BETTER_AUTH_SECRET"
user_claim = "sub"
identity_header = "X-User-Id"
leeway = "30s"
strip_headers = ["X-User-Email", "X-User-Role"]

[[route]]
path = "/health"
auth = "public"

[[route]]
path = "/api/{user_id}/tasks"
methods = ["GET", "POST"]
owner = "user_id"

[[route]]
path = "/api/{user_id}/tasks/{*rest}"
owner = "user_id"
"#;

pub fn parse_config(toml: &str) -> Config {
    parse_config_with(toml, &|name| {
        (name == "BETTER_AUTH_SECRET").then(|| SECRET.to_string())
    })
}

pub fn parse_config_with(toml: &str, env: &dyn Fn(&str) -> Option<String>) -> Config {
    Config::parse(toml, "test.toml", env).unwrap_or_else(|err| panic!("test config invalid: {err}"))
}

/// A running gateway on an ephemeral port, forwarding to `upstream`.
pub struct GatewayHandle {
    pub addr: SocketAddr,
    /// The gateway as started (a reload swaps `live`'s, not this one).
    pub gateway: Arc<Gateway>,
    pub live: Arc<Live>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

pub async fn start_gateway(toml: &str, upstream: SocketAddr) -> GatewayHandle {
    start_gateway_with(parse_config(toml), upstream).await
}

pub async fn start_gateway_with(mut config: Config, upstream: SocketAddr) -> GatewayHandle {
    if let Some(default) = config.upstream.as_mut() {
        default.authority = upstream.to_string().parse().unwrap();
    }
    start_gateway_as_configured(config).await
}

/// A gateway with `config` as it is, upstream included.
pub async fn start_gateway_as_configured(config: Config) -> GatewayHandle {
    let live = Live::new(config).unwrap();
    let gateway = live.gateway();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(authgate::server::serve(listener, live.clone(), async {
        let _ = rx.await;
    }));
    GatewayHandle {
        addr,
        gateway,
        live,
        _shutdown: tx,
    }
}

/// A backend and a gateway in front of it with `BASE_CONFIG`.
pub async fn setup() -> (Backend, GatewayHandle) {
    let backend = Backend::start().await;
    let gateway = start_gateway(BASE_CONFIG, backend.addr).await;
    (backend, gateway)
}

#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "body is not JSON: {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Sends raw bytes and reads the response until the server closes the connection (requests
/// built here always say `Connection: close`).
pub async fn send_raw(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut buffer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buffer)).await;
    assert!(
        read.is_ok(),
        "the gateway did not answer or close within 10 s"
    );
    parse_response(&buffer)
}

pub fn parse_response(buffer: &[u8]) -> RawResponse {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buffer) {
        Ok(httparse::Status::Complete(len)) => len,
        other => panic!(
            "unparseable response {other:?}: {:?}",
            String::from_utf8_lossy(buffer)
        ),
    };
    let headers: Vec<(String, String)> = response
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let mut body = buffer[head_len..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    RawResponse {
        status: response.code.unwrap(),
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = std::str::from_utf8(&data[..line_end]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// A request with `Connection: close`, the given extra header lines and optional body.
pub fn build_request(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut request =
        format!("{method} {target} HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" || method == "PATCH" {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

pub async fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> RawResponse {
    send_raw(addr, &build_request(method, target, headers, body)).await
}

/// `POST /api/alice/tasks` with `auth` as the Authorization value and a Content-Type.
pub async fn post_tasks(
    addr: SocketAddr,
    auth: &str,
    content_type: &str,
    body: &[u8],
) -> RawResponse {
    request(
        addr,
        "POST",
        "/api/alice/tasks",
        &[("Authorization", auth), ("Content-Type", content_type)],
        body,
    )
    .await
}

/// A free loopback port for a real binary to listen on (a listener is bound, then dropped).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `config` (BASE_CONFIG or one derived from it) listening on `port` in front of `backend`, for
/// a real binary.
pub fn on_port_before(config: &str, port: u16, backend: SocketAddr) -> String {
    config
        .replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        )
        .replace(
            "url = \"http://127.0.0.1:1\"",
            &format!("url = \"http://{backend}\""),
        )
}

/// Waits, up to 10 s, until something accepts connections on `addr`: a started binary is ready.
pub fn wait_until_listening(addr: SocketAddr) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing listens on {addr}: the gateway did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A loopback address nobody listens on (a listener is bound, then dropped).
pub async fn unused_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Signs arbitrary header and claims JSON with HMAC-SHA256 and `secret`: lets tests build tokens
/// no well-behaved library would.
pub fn sign_hs256(header: &str, claims: &str, secret: &[u8]) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let key = jsonwebtoken::EncodingKey::from_secret(secret);
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &key, jsonwebtoken::Algorithm::HS256)
            .unwrap();
    format!("{message}.{signature}")
}

/// A valid HS256 token for `sub`, expiring in an hour.
pub fn token_for(sub: &str) -> String {
    sign_hs256(
        r#"{"alg":"HS256","typ":"JWT"}"#,
        &format!(
            r#"{{"sub":"{sub}","iat":{},"exp":{}}}"#,
            now(),
            now() + 3600
        ),
        SECRET.as_bytes(),
    )
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A backend answering every request with `size` bytes: byte i is `i % 251`.
pub async fn big_body_backend(size: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let body = Bytes::from((0..size).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_: Request<hyper::body::Incoming>| {
                    let body = body.clone();
                    async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// Where `body` first differs from what `big_body_backend` sends (byte i is `i % 251`), if anywhere.
pub fn first_unlike_big_body(body: &[u8]) -> Option<usize> {
    body.iter()
        .enumerate()
        .position(|(i, &b)| b != (i % 251) as u8)
}
