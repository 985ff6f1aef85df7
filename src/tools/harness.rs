//! Runs decision cases through the real gateway in this process: the config as written, with the
//! test issuer's keys (`tools::issuer`), limits off, and two stand-ins on loopback ports of this
//! process: a recorder in place of every upstream (it answers 200 and keeps what it received) and,
//! with `[auth.session]`, Better Auth's get-session answering for the sessions the test issuer
//! minted. Each case is sent as raw bytes over a real connection, so the request-target reaches
//! the gateway exactly as the case wrote it. Nothing outside this process is contacted.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::config::Config;
use crate::runtime::live::Live;
use crate::tools::cases::{Caller, Case};
use crate::tools::issuer::TestIssuer;

/// The longest one case may take.
const CASE_TIMEOUT: Duration = Duration::from_secs(10);
/// What stands in for every secret the config reads from the environment, so a run does not
/// depend on the environment (CI has none of them): the test issuer replaces the ones that sign,
/// and nothing else is contacted.
const PLACEHOLDER_SECRET: &str =
    "authgate-test-placeholder-secret-0123456789abcdef0123456789abcdef";
/// A header the recorder adds to its answer, so a forwarded request is told from a refusal.
const RECORDER_HEADER: &str = "x-authgate-test-recorder";

/// What the backend received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    /// Every value of a header, in order.
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(known, _)| known.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
            .collect()
    }
}

/// What happened to one case's request.
#[derive(Debug)]
pub struct Outcome {
    pub status: u16,
    /// The gateway's JSON refusal: its `error` code and `message`.
    pub error: Option<(String, String)>,
    /// What the backend received; `None` when the request never reached it.
    pub received: Option<Received>,
}

type Sessions = Arc<Mutex<HashMap<String, serde_json::Value>>>;

/// A gateway, a recorder and the session stand-in, for as long as it lives.
pub struct Harness {
    gateway: SocketAddr,
    issuer: TestIssuer,
    received: Arc<Mutex<Vec<Received>>>,
    sessions: Sessions,
    /// The user id header the config injects, for reports.
    pub identity_header: String,
    config: Arc<Config>,
    _stop: tokio::sync::watch::Sender<()>,
}

/// Reads a config for testing: as `Config::load`, with a placeholder for every secret.
pub fn load_config(path: &std::path::Path) -> Result<Config, String> {
    Config::load_with(path, &|_| Some(PLACEHOLDER_SECRET.to_string()))
        .map_err(|err| format!("invalid config: {err}"))
}

impl Harness {
    /// Starts everything for `config` (as loaded by `load_config`).
    pub async fn start(mut config: Config) -> Result<Harness, String> {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let recorder = TcpListener::bind(loopback)
            .await
            .map_err(|err| format!("cannot bind the recorder: {err}"))?;
        let recorder_addr = recorder.local_addr().map_err(|err| err.to_string())?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let sessions: Sessions = Arc::default();
        // Dropping the harness drops `stop`, which ends every server it started.
        let (stop, stop_watch) = tokio::sync::watch::channel(());
        let stopped = move || {
            let mut stop_watch = stop_watch.clone();
            async move {
                let _ = stop_watch.changed().await;
            }
        };

        let issuer = TestIssuer::install(&mut config)?;
        let authority: http::uri::Authority = recorder_addr
            .to_string()
            .parse()
            .map_err(|_| "bad recorder address".to_string())?;
        let upstreams = config.upstream.iter_mut().chain(
            config
                .named_upstreams
                .iter_mut()
                .map(|(_, upstream)| upstream),
        );
        for upstream in upstreams {
            upstream.scheme = http::uri::Scheme::HTTP;
            upstream.authority = authority.clone();
            upstream.tls = None;
        }
        if let Some(session) = &mut config.auth.session {
            let better_auth = TcpListener::bind(loopback)
                .await
                .map_err(|err| format!("cannot bind the Better Auth stand-in: {err}"))?;
            let address = better_auth.local_addr().map_err(|err| err.to_string())?;
            session.base_url = format!("http://{address}")
                .parse()
                .map_err(|_| "bad stand-in address".to_string())?;
            let prefix = session.cookie_prefix.clone();
            let sessions = sessions.clone();
            tokio::spawn(serve(better_auth, stopped(), move |request| {
                get_session(&request, &prefix, &sessions)
            }));
        }
        // Decisions, not quotas: a run of cases must not trip a limit or the brute-force guard.
        config.rate_limit.per_user = None;
        config.rate_limit.per_ip = None;
        config.rate_limit.auth_failures = None;
        for route in &mut config.routes {
            route.rate_limit = None;
        }
        config.store = None;
        config.server.tls = None;
        config.server.redirect_http = None;
        config.admin_listen = None;
        config.log.access = false;
        let identity_header = config.auth.identity_header.as_str().to_string();
        let config = Arc::new(config);

        tokio::spawn(serve_recorder(recorder, stopped(), received.clone()));

        let listener = TcpListener::bind(loopback)
            .await
            .map_err(|err| format!("cannot bind the gateway: {err}"))?;
        let gateway = listener.local_addr().map_err(|err| err.to_string())?;
        let live = Live::new((*config).clone()).map_err(|err| err.to_string())?;
        tokio::spawn(crate::runtime::server::serve(listener, live, stopped()));
        Ok(Harness {
            gateway,
            issuer,
            received,
            sessions,
            identity_header,
            config,
            _stop: stop,
        })
    }

    /// The config the gateway runs (with the test issuer's keys and the stand-ins' addresses).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Sends one case's request and reports what happened.
    pub async fn run(&self, case: &Case) -> Result<Outcome, String> {
        let now = crate::tools::unix_now();
        let credential = match &case.caller {
            Caller::Anonymous => None,
            Caller::User(user) => Some(self.issuer.credential(user, now)?),
        };
        if let Some((token, answer)) = credential
            .as_ref()
            .and_then(|credential| credential.session.clone())
        {
            self.sessions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(token, answer);
        }
        self.received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        let mut request = format!("{} {} HTTP/1.1\r\n", case.method, case.target).into_bytes();
        let has = |name: &str| {
            case.headers
                .iter()
                .any(|(known, _)| known.eq_ignore_ascii_case(name))
        };
        if !has("host") {
            request.extend_from_slice(b"Host: gateway.test\r\n");
        }
        for (name, value) in &case.headers {
            request.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        if let Some(credential) = &credential {
            request.extend_from_slice(
                format!("{}: {}\r\n", credential.header, credential.value).as_bytes(),
            );
        }
        if !case.body.is_empty() && !has("content-length") && !has("transfer-encoding") {
            request
                .extend_from_slice(format!("Content-Length: {}\r\n", case.body.len()).as_bytes());
        }
        request.extend_from_slice(b"Connection: close\r\n\r\n");
        request.extend_from_slice(&case.body);
        let response = tokio::time::timeout(CASE_TIMEOUT, exchange(self.gateway, &request))
            .await
            .map_err(|_| format!("no answer within {CASE_TIMEOUT:?}"))??;
        let received = self
            .received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .first()
            .cloned();
        let forwarded = response.recorder;
        let error = if forwarded {
            None
        } else {
            serde_json::from_slice::<serde_json::Value>(&response.body)
                .ok()
                .and_then(|body| {
                    Some((
                        body.get("error")?.as_str()?.to_string(),
                        body.get("message")
                            .and_then(serde_json::Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                    ))
                })
        };
        Ok(Outcome {
            status: response.status,
            error,
            received: if forwarded { received } else { None },
        })
    }
}

struct RawResponse {
    status: u16,
    recorder: bool,
    body: Vec<u8>,
}

/// Writes one request and reads the answer to the end of the connection.
async fn exchange(gateway: SocketAddr, request: &[u8]) -> Result<RawResponse, String> {
    let mut stream = TcpStream::connect(gateway)
        .await
        .map_err(|err| format!("cannot connect to the gateway: {err}"))?;
    stream
        .write_all(request)
        .await
        .map_err(|err| format!("cannot send the request: {err}"))?;
    let mut answer = Vec::new();
    // The gateway may answer and close before it read the whole body; what it said still counts.
    let _ = stream.read_to_end(&mut answer).await;
    let head_end = answer
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or("the gateway closed the connection without an answer")?;
    let head = String::from_utf8_lossy(&answer[..head_end]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or("the gateway's status line is unreadable")?;
    let mut recorder = false;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case(RECORDER_HEADER) {
            recorder = true;
        }
        if name.eq_ignore_ascii_case("transfer-encoding")
            && value.trim().eq_ignore_ascii_case("chunked")
        {
            chunked = true;
        }
    }
    let mut body = answer[head_end + 4..].to_vec();
    if chunked {
        body = dechunk(&body);
    }
    Ok(RawResponse {
        status,
        recorder,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(line_end) = data.windows(2).position(|window| window == b"\r\n") {
        let size = std::str::from_utf8(&data[..line_end])
            .ok()
            .and_then(|line| usize::from_str_radix(line.split(';').next()?.trim(), 16).ok());
        let Some(size) = size.filter(|size| *size > 0) else {
            break;
        };
        let start = line_end + 2;
        let Some(chunk) = data.get(start..start + size) else {
            break;
        };
        body.extend_from_slice(chunk);
        data = data.get(start + size + 2..).unwrap_or_default();
    }
    body
}

/// Serves `answer` on every connection of `listener` until `stopped`.
async fn serve<F>(listener: TcpListener, stopped: impl Future<Output = ()>, answer: F)
where
    F: Fn(Request<Bytes>) -> Response<Full<Bytes>> + Clone + Send + Sync + 'static,
{
    let accepting = async {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let answer = answer.clone();
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|collected| collected.to_bytes())
                            .unwrap_or_default();
                        Ok::<_, Infallible>(answer(Request::from_parts(parts, body)))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    };
    tokio::select! {
        () = accepting => {}
        () = stopped => {}
    }
}

async fn serve_recorder(
    listener: TcpListener,
    stopped: impl Future<Output = ()>,
    received: Arc<Mutex<Vec<Received>>>,
) {
    serve(listener, stopped, move |request| {
        let (parts, body) = request.into_parts();
        received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Received {
                method: parts.method.to_string(),
                target: parts
                    .uri
                    .path_and_query()
                    .map_or_else(|| parts.uri.to_string(), |target| target.to_string()),
                headers: parts
                    .headers
                    .iter()
                    .map(|(name, value)| {
                        (
                            name.as_str().to_string(),
                            String::from_utf8_lossy(value.as_bytes()).into_owned(),
                        )
                    })
                    .collect(),
                body: body.to_vec(),
            });
        let mut response = Response::new(Full::new(Bytes::from_static(b"{\"recorded\":true}")));
        response
            .headers_mut()
            .insert(RECORDER_HEADER, http::HeaderValue::from_static("1"));
        response
    })
    .await;
}

/// Better Auth's `GET /api/auth/get-session` for the sessions the test issuer minted.
fn get_session(
    request: &Request<Bytes>,
    prefix: &str,
    sessions: &Sessions,
) -> Response<Full<Bytes>> {
    let name = format!("{prefix}.session_token=");
    let token = request
        .headers()
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .map(str::trim)
        .find_map(|pair| {
            pair.strip_prefix(&name)
                .or_else(|| pair.strip_prefix(&format!("__Secure-{name}")))
        })
        .map(|value| {
            value
                .replace("%2B", "+")
                .replace("%2F", "/")
                .replace("%3D", "=")
        })
        .and_then(|value| Some(value.rsplit_once('.')?.0.to_string()));
    let answer = token
        .and_then(|token| {
            sessions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&token)
                .cloned()
        })
        .unwrap_or(serde_json::Value::Null);
    let mut response = Response::new(Full::new(Bytes::from(answer.to_string())));
    if request.uri().path() != "/api/auth/get-session" {
        *response.status_mut() = StatusCode::NOT_FOUND;
    }
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
