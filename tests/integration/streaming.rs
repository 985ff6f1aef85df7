//! WebSocket upgrades and streamed bodies: authorize the handshake, splice only after 101, and
//! stream large and long-lived bodies without buffering.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;

type Handler = Arc<
    dyn Fn(
            Request<hyper::body::Incoming>,
        ) -> std::pin::Pin<
            Box<
                dyn std::future::Future<
                        Output = Response<http_body_util::combinators::BoxBody<Bytes, Infallible>>,
                    > + Send,
            >,
        > + Send
        + Sync,
>;

/// A backend whose behaviour the test supplies; serves HTTP/1.1 with upgrades.
async fn custom_backend(handler: Handler) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(request).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

fn full(bytes: &'static [u8]) -> http_body_util::combinators::BoxBody<Bytes, Infallible> {
    Full::new(Bytes::from_static(bytes)).boxed()
}

/// An echo "WebSocket" backend: answers 101 and echoes raw bytes (the gateway never looks inside
/// frames, so the test needs no framing). Records the handshake's X-User-Id.
async fn echo_backend(refuse: bool) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let handler: Handler = Arc::new(move |mut request| {
        let log = log.clone();
        Box::pin(async move {
            let user = request
                .headers()
                .get("x-user-id")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            log.lock().unwrap().push(user);
            if refuse {
                let mut response = Response::new(full(b"{\"detail\":\"no websocket for you\"}"));
                *response.status_mut() = StatusCode::FORBIDDEN;
                return response;
            }
            let upgrade = hyper::upgrade::on(&mut request);
            tokio::spawn(async move {
                if let Ok(upgraded) = upgrade.await {
                    let mut io = TokioIo::new(upgraded);
                    let mut buffer = [0u8; 1024];
                    while let Ok(n) = io.read(&mut buffer).await {
                        if n == 0 || io.write_all(&buffer[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
            let mut response = Response::new(full(b""));
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            response
                .headers_mut()
                .insert("upgrade", "websocket".parse().unwrap());
            response
                .headers_mut()
                .insert("connection", "Upgrade".parse().unwrap());
            response.headers_mut().insert(
                "sec-websocket-accept",
                "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".parse().unwrap(),
            );
            response
        })
    });
    (custom_backend(handler).await, seen)
}

fn ws_config(extra: &str) -> String {
    let split = BASE_CONFIG.find("[[route]]").unwrap();
    format!(
        "{}[[route]]\npath = \"/api/{{user_id}}/ws\"\nowner = \"user_id\"\nwebsocket = true\n{extra}\n\n{}",
        &BASE_CONFIG[..split],
        &BASE_CONFIG[split..]
    )
}

/// Sends a WebSocket handshake; returns the status and the open stream.
async fn handshake(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, TcpStream) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).await.unwrap(),
            1,
            "closed during the handshake"
        );
        head.push(byte[0]);
    }
    let status = std::str::from_utf8(&head[9..12]).unwrap().parse().unwrap();
    (status, stream)
}

#[tokio::test]
async fn websocket_valid_token_is_spliced_and_echoes() {
    let (backend, seen) = echo_backend(false).await;
    let gateway = start_gateway(&ws_config(""), backend).await;
    let (status, mut stream) =
        handshake(gateway.addr, "/api/alice/ws", Some(&token_for("alice"))).await;
    assert_eq!(status, 101);
    for message in [&b"hello"[..], b"second message", &[0u8, 1, 2, 255]] {
        stream.write_all(message).await.unwrap();
        let mut echoed = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echoed))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(echoed, message);
    }
    assert_eq!(*seen.lock().unwrap(), vec!["alice"]);
}

/// An https backend that accepts connections and never answers, so the TLS handshake stalls:
/// opening the upstream connection, TLS included, is bounded by `connect_timeout` for an upgrade
/// as for any request. 502 from both paths, where the upgrade's used to wait for the response
/// timeout (504).
#[tokio::test]
async fn a_stalled_upstream_tls_handshake_gets_502_within_connect_timeout_for_upgrades_too() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    let toml = ws_config("").replace(
        "url = \"http://127.0.0.1:1\"",
        &format!(
            "url = \"https://{backend}\"\ninsecure_skip_verify = true\nconnect_timeout = \"300ms\""
        ),
    );
    let gateway = start_gateway_as_configured(parse_config(&toml)).await;
    let token = token_for("alice");
    let (status, mut stream) = handshake(gateway.addr, "/api/alice/ws", Some(&token)).await;
    assert_eq!(status, 502);
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    let text = String::from_utf8_lossy(&rest);
    assert!(text.contains("upstream_unavailable"), "answer: {text}");
    let plain = request(
        gateway.addr,
        "GET",
        "/api/alice/tasks",
        &[("Authorization", &bearer(&token))],
        b"",
    )
    .await;
    assert_eq!(plain.status, 502);
    assert_eq!(plain.json()["error"], "upstream_unavailable");
    assert!(accepted.load(Ordering::SeqCst) >= 2);
}

#[tokio::test]
async fn websocket_handshake_is_authorized_like_any_request() {
    let (backend, seen) = echo_backend(false).await;
    let gateway = start_gateway(&ws_config(""), backend).await;
    let (status, _) = handshake(gateway.addr, "/api/alice/ws", None).await;
    assert_eq!(status, 401);
    let (status, _) = handshake(gateway.addr, "/api/bob/ws", Some(&token_for("alice"))).await;
    assert_eq!(status, 403);
    // An upgrade on a route that did not opt in is refused: 400.
    let (status, _) = handshake(gateway.addr, "/api/alice/tasks", Some(&token_for("alice"))).await;
    assert_eq!(status, 400);
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing reached the backend"
    );
}

#[tokio::test]
async fn a_backend_refusing_the_upgrade_has_its_answer_passed_through() {
    let (backend, seen) = echo_backend(true).await;
    let gateway = start_gateway(&ws_config(""), backend).await;
    let (status, mut stream) =
        handshake(gateway.addr, "/api/alice/ws", Some(&token_for("alice"))).await;
    assert_eq!(status, 403);
    let mut body = [0u8; 33];
    stream.read_exact(&mut body).await.unwrap();
    assert_eq!(&body, b"{\"detail\":\"no websocket for you\"}");
    assert_eq!(*seen.lock().unwrap(), vec!["alice"]);
}

async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buffer = [0u8; 64];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn idle_websockets_are_closed() {
    let (backend, _) = echo_backend(false).await;
    let gateway = start_gateway(&ws_config("websocket_idle = \"500ms\""), backend).await;
    let (status, mut stream) =
        handshake(gateway.addr, "/api/alice/ws", Some(&token_for("alice"))).await;
    assert_eq!(status, 101);
    assert!(
        closed_within(&mut stream, Duration::from_secs(5)).await,
        "idle websocket kept open"
    );
}

#[tokio::test]
async fn websockets_close_when_the_token_expires_if_asked() {
    let (backend, _) = echo_backend(false).await;
    let gateway = start_gateway(&ws_config("websocket_close_on_expiry = true"), backend).await;
    let token = sign_hs256(
        r#"{"alg":"HS256"}"#,
        &format!(r#"{{"sub":"alice","exp":{}}}"#, now() + 2),
        SECRET.as_bytes(),
    );
    let (status, mut stream) = handshake(gateway.addr, "/api/alice/ws", Some(&token)).await;
    assert_eq!(status, 101);
    stream.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    stream.read_exact(&mut echoed).await.unwrap();
    assert!(
        closed_within(&mut stream, Duration::from_secs(10)).await,
        "kept open past the token's expiry"
    );
}

#[tokio::test]
async fn server_sent_events_arrive_event_by_event() {
    // The backend sends the second event only after the client saw the first: a gateway that
    // buffered the response would deadlock here.
    let first_seen = Arc::new(tokio::sync::Notify::new());
    let notify = first_seen.clone();
    let handler: Handler = Arc::new(move |_request| {
        let notify = notify.clone();
        Box::pin(async move {
            let (sender, receiver) =
                tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
            tokio::spawn(async move {
                let _ = sender
                    .send(Ok(Frame::data(Bytes::from_static(b"data: one\n\n"))))
                    .await;
                notify.notified().await;
                let _ = sender
                    .send(Ok(Frame::data(Bytes::from_static(b"data: two\n\n"))))
                    .await;
            });
            let mut response = Response::new(BodyExt::boxed(ChannelBody(receiver)));
            response
                .headers_mut()
                .insert("content-type", "text/event-stream".parse().unwrap());
            response
        })
    });
    let backend = custom_backend(handler).await;
    let gateway = start_gateway(BASE_CONFIG, backend).await;
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let token = token_for("alice");
    stream
        .write_all(format!("GET /api/alice/tasks/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buffer = [0u8; 1024];
    let first = tokio::time::timeout(Duration::from_secs(5), async {
        while !String::from_utf8_lossy(&seen).contains("data: one") {
            let n = stream.read(&mut buffer).await.unwrap();
            assert!(n > 0, "closed before the first event");
            seen.extend_from_slice(&buffer[..n]);
        }
    })
    .await;
    assert!(
        first.is_ok(),
        "the first event was held back until the stream ended"
    );
    assert!(!String::from_utf8_lossy(&seen).contains("data: two"));
    first_seen.notify_one();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut seen)).await;
    assert!(String::from_utf8_lossy(&seen).contains("data: two"));
}

/// A response body fed frame by frame through a channel, so the backend controls the pacing.
struct ChannelBody(tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, Infallible>>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut().0.poll_recv(cx)
    }
}

const CHUNK: usize = 64 * 1024;

fn pattern_chunk(index: usize) -> Bytes {
    Bytes::from(
        (0..CHUNK)
            .map(|i| ((i * 31 + index * 7) % 251) as u8)
            .collect::<Vec<u8>>(),
    )
}

#[tokio::test]
async fn large_uploads_and_downloads_stream_intact() {
    const CHUNKS: usize = 512; // 32 MiB each way
    let handler: Handler = Arc::new(|request| {
        Box::pin(async move {
            if request.method() == hyper::Method::POST {
                let mut hasher = Sha256::new();
                let mut body = request.into_body();
                let mut total = 0usize;
                while let Some(Ok(frame)) = body.frame().await {
                    if let Some(data) = frame.data_ref() {
                        total += data.len();
                        hasher.update(data);
                    }
                }
                let answer = format!("{total} {:x}", hasher.finalize());
                return Response::new(Full::new(Bytes::from(answer)).boxed());
            }
            let (sender, receiver) =
                tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(2);
            tokio::spawn(async move {
                for index in 0..CHUNKS {
                    if sender
                        .send(Ok(Frame::data(pattern_chunk(index))))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
            Response::new(BodyExt::boxed(ChannelBody(receiver)))
        })
    });
    let backend = custom_backend(handler).await;
    let config = BASE_CONFIG.replace(
        "[[route]]\npath = \"/health\"",
        "[limits]\nmax_body_bytes = 1073741824\n\n[[route]]\npath = \"/health\"",
    );
    let gateway = start_gateway(&config, backend).await;
    let token = token_for("alice");

    // Upload, chunked, with the expected digest computed on the side.
    let mut expected = Sha256::new();
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    stream
        .write_all(format!("POST /api/alice/tasks/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    for index in 0..CHUNKS {
        let chunk = pattern_chunk(index);
        expected.update(&chunk);
        stream
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .unwrap();
        stream.write_all(&chunk).await.unwrap();
        stream.write_all(b"\r\n").await.unwrap();
    }
    stream.write_all(b"0\r\n\r\n").await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let response = parse_response(&raw);
    assert_eq!(response.status, 200);
    assert_eq!(
        String::from_utf8(response.body).unwrap(),
        format!("{} {:x}", CHUNKS * CHUNK, expected.finalize())
    );

    // Download, hashed as it arrives.
    let mut expected = Sha256::new();
    for index in 0..CHUNKS {
        expected.update(pattern_chunk(index));
    }
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    stream
        .write_all(format!("GET /api/alice/tasks/download HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let response = parse_response(&raw);
    assert_eq!(response.status, 200);
    assert_eq!(response.body.len(), CHUNKS * CHUNK);
    assert_eq!(
        format!("{:x}", Sha256::digest(&response.body)),
        format!("{:x}", expected.finalize())
    );
}

#[tokio::test]
async fn a_client_disconnect_mid_stream_reaches_the_backend() {
    let backend_saw_disconnect = Arc::new(AtomicBool::new(false));
    let flag = backend_saw_disconnect.clone();
    let handler: Handler = Arc::new(move |_request| {
        let flag = flag.clone();
        Box::pin(async move {
            let (sender, receiver) =
                tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
            tokio::spawn(async move {
                loop {
                    if sender
                        .send(Ok(Frame::data(Bytes::from_static(b"tick\n"))))
                        .await
                        .is_err()
                    {
                        // The gateway dropped the upstream body: the client is gone.
                        flag.store(true, Ordering::SeqCst);
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
            Response::new(BodyExt::boxed(ChannelBody(receiver)))
        })
    });
    let backend = custom_backend(handler).await;
    let gateway = start_gateway(BASE_CONFIG, backend).await;
    let token = token_for("alice");
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    stream
        .write_all(format!("GET /api/alice/tasks/feed HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buffer = [0u8; 256];
    let n = stream.read(&mut buffer).await.unwrap();
    assert!(n > 0);
    drop(stream);
    let started = Instant::now();
    while !backend_saw_disconnect.load(Ordering::SeqCst) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the backend never saw the client leave"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn stream_timeout_ends_a_long_stream() {
    let handler: Handler = Arc::new(|_request| {
        Box::pin(async move {
            let (sender, receiver) =
                tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
            tokio::spawn(async move {
                while sender
                    .send(Ok(Frame::data(Bytes::from_static(b"tick\n"))))
                    .await
                    .is_ok()
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
            Response::new(BodyExt::boxed(ChannelBody(receiver)))
        })
    });
    let backend = custom_backend(handler).await;
    let config = BASE_CONFIG.replace(
        "path = \"/api/{user_id}/tasks/{*rest}\"\nowner = \"user_id\"",
        "path = \"/api/{user_id}/tasks/{*rest}\"\nowner = \"user_id\"\nstream_timeout = \"500ms\"",
    );
    let gateway = start_gateway(&config, backend).await;
    let token = token_for("alice");
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    stream
        .write_all(format!("GET /api/alice/tasks/feed HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    assert!(
        closed_within(&mut stream, Duration::from_secs(5)).await,
        "the stream outlived stream_timeout"
    );
}

#[tokio::test]
async fn connect_and_h2_websockets_are_refused_clearly() {
    let (backend, seen) = echo_backend(false).await;
    let gateway = start_gateway(&ws_config(""), backend).await;
    let response = send_raw(
        gateway.addr,
        b"CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: 127.0.0.1:80\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(response.status, 400);
    assert!(seen.lock().unwrap().is_empty());
}

/// Request trailers lose what the header rewrite drops, and what RFC 9110 6.5.1 keeps out of
/// trailers (credentials, framing, content metadata): a backend that merges trailers into headers
/// must not get a second Authorization or Content-Type.
#[tokio::test]
async fn request_trailers_pass_with_header_hygiene() {
    let (backend, gateway) = setup().await;
    let alice = token_for("alice");
    let bob = token_for("bob");
    let raw = format!(
        "POST /api/alice/tasks/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice}\r\n\
         Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\
         Trailer: X-Checksum, X-User-Id, X-Forwarded-For, Authorization, Content-Type\r\n\
         Connection: close\r\n\r\n5\r\nhello\r\n0\r\nX-Checksum: abc123\r\nX-User-Id: bob\r\n\
         X-Forwarded-For: 6.6.6.6\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Authorization: Bearer {bob}\r\nContent-Length: 99\r\nIf-Match: *\r\nCookie: a=b\r\n\r\n"
    );
    let response = send_raw(gateway.addr, raw.as_bytes()).await;
    assert_eq!(response.status, 200);
    let received = backend.only();
    assert_eq!(received.body, b"hello");
    assert_eq!(
        received.trailers,
        vec![("x-checksum".to_string(), "abc123".to_string())]
    );
    assert_eq!(received.header_values("trailer"), vec!["X-Checksum"]);
    assert_eq!(received.header_values("x-user-id"), vec!["alice"]);
    assert_eq!(
        received.header_values("authorization"),
        vec![format!("Bearer {alice}")]
    );
}

/// A chunked body that breaks its own framing is the client's fault: 400, not a 502 that blames
/// the backend.
#[tokio::test]
async fn a_malformed_chunked_request_body_is_a_bad_request() {
    let (backend, gateway) = setup().await;
    let token = token_for("alice");
    for chunks in ["zz\r\nhello\r\n0\r\n\r\n", "2\r\nhello\r\n0\r\n\r\n"] {
        let raw = format!(
            "POST /api/alice/tasks/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{chunks}"
        );
        let response = send_raw(gateway.addr, raw.as_bytes()).await;
        assert_eq!(response.status, 400, "{chunks:?}");
        assert_eq!(response.json()["error"], "bad_request", "{chunks:?}");
    }
    // At most the head went upstream before the body broke: no request body ever arrived whole.
    assert!(backend
        .received()
        .iter()
        .all(|r| r.body.len() < 5 && r.header_values("x-user-id") == ["alice"]));
}

/// An HTTP/2 stream whose events are further apart than nothing, but each closer than
/// idle_timeout, keeps its connection: the idle rule closes only what stopped moving.
#[tokio::test]
async fn a_moving_http2_stream_outlives_idle_timeout() {
    let handler: Handler = Arc::new(move |_request| {
        Box::pin(async move {
            let (sender, receiver) =
                tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
            tokio::spawn(async move {
                for _ in 0..6 {
                    tokio::time::sleep(Duration::from_millis(400)).await;
                    let event = Frame::data(Bytes::from_static(b"data: tick\n\n"));
                    if sender.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
            });
            Response::new(BodyExt::boxed(ChannelBody(receiver)))
        })
    });
    let backend = custom_backend(handler).await;
    let config = BASE_CONFIG.replacen(
        "[[route]]",
        "[limits]\nidle_timeout = \"1s\"\n\n[[route]]",
        1,
    );
    let gateway = start_gateway(&config, backend).await;
    let tcp = TcpStream::connect(gateway.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let request = Request::builder()
        .uri("http://gateway.test/api/alice/tasks/events")
        .header("authorization", bearer(&token_for("alice")))
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let started = std::time::Instant::now();
    let body = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
        .await
        .expect("the stream never ended")
        .expect("the stream was cut")
        .to_bytes();
    assert_eq!(body.len(), 6 * b"data: tick\n\n".len());
    assert!(started.elapsed() >= Duration::from_secs(2));
}
