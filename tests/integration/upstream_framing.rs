//! The lean upstream HTTP/1.1 path (src/proxy/upstream/h1/) against a backend that writes raw bytes:
//! every response framing is relayed exactly or refused with a 502, a connection is reused only
//! after a response read exactly to its end, and the backend receives exactly one framing for
//! each request body. The backend records each request's head and body as they arrived.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;

/// A request as the scripted backend read it.
#[derive(Debug, Clone)]
struct Seen {
    /// 1 for the backend's first TCP connection, and so on.
    connection: usize,
    /// The request head as it arrived, lower-cased names included as sent.
    head: String,
    /// The body, de-chunked if it was chunked.
    body: Vec<u8>,
}

impl Seen {
    fn target(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or_default()
    }

    /// Values of a field, by case-insensitive name.
    fn field(&self, name: &str) -> Vec<String> {
        self.head
            .lines()
            .skip(1)
            .filter_map(|line| line.split_once(':'))
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }
}

/// What the backend does for one request.
enum Reply {
    /// Writes these bytes, and keeps the connection.
    Send(Vec<u8>),
    /// Writes these bytes, then closes.
    SendThenClose(Vec<u8>),
    /// Writes these bytes one at a time, a millisecond apart.
    Trickle(Vec<u8>),
    /// Writes these bytes at once, without reading the request body: what a lenient backend
    /// that refuses early does. Whatever else arrives is read as the next request.
    AnswerWithoutReadingBody(Vec<u8>),
    /// Writes the first bytes, then the second 50 ms later.
    SendThenLater(Vec<u8>, Vec<u8>),
}

struct ScriptedBackend {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl ScriptedBackend {
    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn scripted_backend(script: fn(&str) -> Reply) -> ScriptedBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (count, log) = (connections.clone(), seen.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let connection = count.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::spawn(serve_script(stream, connection, script, log.clone()));
        }
    });
    ScriptedBackend {
        addr,
        connections,
        seen,
    }
}

async fn serve_script(
    mut stream: TcpStream,
    connection: usize,
    script: fn(&str) -> Reply,
    log: Arc<Mutex<Vec<Seen>>>,
) {
    let mut buffer = Vec::new();
    loop {
        let Some(head_end) = read_until(&mut stream, &mut buffer, b"\r\n\r\n").await else {
            return;
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        buffer.drain(..head_end + 4);
        let mut seen = Seen {
            connection,
            head,
            body: Vec::new(),
        };
        if let Reply::AnswerWithoutReadingBody(bytes) = script(seen.target()) {
            log.lock().unwrap().push(seen);
            if stream.write_all(&bytes).await.is_err() {
                return;
            }
            continue;
        }
        if seen
            .field("transfer-encoding")
            .iter()
            .any(|v| v == "chunked")
        {
            loop {
                let Some(line_end) = read_until(&mut stream, &mut buffer, b"\r\n").await else {
                    return;
                };
                let line = String::from_utf8_lossy(&buffer[..line_end]).into_owned();
                buffer.drain(..line_end + 2);
                let size = usize::from_str_radix(line.split(';').next().unwrap(), 16).unwrap();
                if size == 0 {
                    // Trailers (if any) end with an empty line.
                    let Some(end) = read_until(&mut stream, &mut buffer, b"\r\n").await else {
                        return;
                    };
                    if end > 0 {
                        read_until(&mut stream, &mut buffer, b"\r\n\r\n").await;
                        let end = find(&buffer, b"\r\n\r\n").unwrap();
                        buffer.drain(..end + 4);
                    } else {
                        buffer.drain(..2);
                    }
                    break;
                }
                read_at_least(&mut stream, &mut buffer, size + 2).await;
                seen.body.extend_from_slice(&buffer[..size]);
                buffer.drain(..size + 2);
            }
        } else if let Some(length) = seen.field("content-length").first() {
            let length: usize = length.parse().unwrap();
            read_at_least(&mut stream, &mut buffer, length).await;
            seen.body = buffer.drain(..length).collect();
        }
        let reply = script(seen.target());
        log.lock().unwrap().push(seen);
        match reply {
            Reply::AnswerWithoutReadingBody(_) => unreachable!("answered above"),
            Reply::SendThenLater(first, second) => {
                if stream.write_all(&first).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                if stream.write_all(&second).await.is_err() {
                    return;
                }
            }
            Reply::Send(bytes) => {
                if stream.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Reply::SendThenClose(bytes) => {
                let _ = stream.write_all(&bytes).await;
                return;
            }
            Reply::Trickle(bytes) => {
                for byte in bytes {
                    if stream.write_all(&[byte]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads until `buffer` contains `needle`; its offset, or `None` at EOF.
async fn read_until(stream: &mut TcpStream, buffer: &mut Vec<u8>, needle: &[u8]) -> Option<usize> {
    loop {
        if let Some(at) = find(buffer, needle) {
            return Some(at);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn read_at_least(stream: &mut TcpStream, buffer: &mut Vec<u8>, length: usize) {
    let mut chunk = [0u8; 4096];
    while buffer.len() < length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The scripted answers, by request path.
fn script(target: &str) -> Reply {
    let path = target.split('?').next().unwrap_or_default();
    let name = path.rsplit('/').next().unwrap_or_default();
    let raw = |text: &str| Reply::Send(text.as_bytes().to_vec());
    match name {
        "chunked" => raw(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-digest\r\n\r\n\
             5\r\nhello\r\n6;note=\"x\"\r\n world\r\n0\r\nx-digest: abc\r\n\r\n",
        ),
        "until-close" => Reply::SendThenClose(b"HTTP/1.1 200 OK\r\n\r\nall of it, until close".to_vec()),
        "hints" => raw(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n\
             HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfinal",
        ),
        "head" => raw("HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n"),
        "reason" => raw("HTTP/1.1 202 Queued For Later\r\ncontent-length: 2\r\n\r\nok"),
        "late-head-body" => Reply::SendThenLater(
            b"HTTP/1.1 200 OK\r\ncontent-length: 44\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nevil!".to_vec(),
        ),
        "no-content" => raw("HTTP/1.1 204 No Content\r\n\r\n"),
        "extra" => raw(
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok\
             HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled",
        ),
        "broken-chunk" => raw("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n"),
        "trickle" => Reply::Trickle(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n".to_vec(),
        ),
        "close-after" => Reply::SendThenClose(ok("{\"closing\":true}")),
        "hop-by-hop" => raw(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Internal-Token\r\nX-Internal-Token: s3cret\r\n\
             Keep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\ncontent-length: 2\r\n\r\nok",
        ),
        // Says close, but leaves the connection open: only the word keeps it from reuse.
        "asks-close" => raw("HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 2\r\n\r\nok"),
        "refuse-early" => Reply::AnswerWithoutReadingBody(
            b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n".to_vec(),
        ),
        "cl-and-te" => raw("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        "two-lengths" => raw("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!"),
        "length-list" => raw("HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\nhello"),
        "gzip-te" => raw("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
        "switch" => raw("HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"),
        "bad-status" => raw("HTTP/1.1 2000 OK\r\ncontent-length: 0\r\n\r\n"),
        "bad-name" => raw("HTTP/1.1 200 OK\r\nbad name: x\r\ncontent-length: 0\r\n\r\n"),
        "folded" => raw("HTTP/1.1 200 OK\r\nx-a: 1\r\n folded\r\ncontent-length: 0\r\n\r\n"),
        "huge-head" => Reply::Send(
            format!("HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 0\r\n\r\n", "a".repeat(70 * 1024))
                .into_bytes(),
        ),
        _ => Reply::Send(ok("{\"ok\":true}")),
    }
}

async fn framing_setup() -> (ScriptedBackend, GatewayHandle, String) {
    let backend = scripted_backend(script).await;
    let gateway = start_gateway(BASE_CONFIG, backend.addr).await;
    (backend, gateway, bearer(&token_for("alice")))
}

async fn get(gateway: &GatewayHandle, auth: &str, path: &str) -> RawResponse {
    request(gateway.addr, "GET", path, &[("Authorization", auth)], b"").await
}

/// The raw bytes of one exchange on a new client connection (which says `Connection: close`).
async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut buffer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buffer)).await;
    assert!(read.is_ok(), "no answer or close within 10 s");
    buffer
}

#[tokio::test]
async fn chunked_responses_pass_intact_with_trailers_and_the_connection_is_reused() {
    let (backend, gateway, auth) = framing_setup().await;
    let raw = raw_exchange(
        gateway.addr,
        &build_request(
            "GET",
            "/api/alice/tasks/chunked",
            &[("Authorization", &auth), ("TE", "trailers")],
            b"",
        ),
    )
    .await;
    let response = parse_response(&raw);
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"hello world");
    let text = String::from_utf8_lossy(&raw);
    assert!(text.contains("x-digest: abc"), "trailer relayed: {text:?}");

    let next = get(&gateway, &auth, "/api/alice/tasks").await;
    assert_eq!(next.status, 200);
    assert_eq!(next.json()["ok"], true);
    assert_eq!(
        backend.connections(),
        1,
        "reused after the chunked body ended"
    );
    let seen = backend.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.connection == 1));
}

#[tokio::test]
async fn a_close_delimited_response_is_relayed_whole_and_its_connection_is_not_reused() {
    let (backend, gateway, auth) = framing_setup().await;
    let response = get(&gateway, &auth, "/api/alice/tasks/until-close").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"all of it, until close");
    let next = get(&gateway, &auth, "/api/alice/tasks").await;
    assert_eq!(next.status, 200);
    let seen = backend.seen();
    assert_eq!(
        seen.iter().map(|s| s.connection).collect::<Vec<_>>(),
        [1, 2],
        "a new connection after a close-delimited body"
    );
}

/// The backend's hop-by-hop fields stop at the gateway: `Connection`, what it nominates,
/// `Keep-Alive` and `Proxy-Authenticate`. A `Connection: close` from the backend is honoured even
/// when it leaves the connection open: that connection is not used again.
#[tokio::test]
async fn hop_by_hop_response_fields_stop_here_and_a_close_is_honoured() {
    let (backend, gateway, auth) = framing_setup().await;
    let raw = raw_exchange(
        gateway.addr,
        &build_request(
            "GET",
            "/api/alice/tasks/hop-by-hop",
            &[("Authorization", &auth)],
            b"",
        ),
    )
    .await;
    let response = parse_response(&raw);
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"ok");
    let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    for field in [
        "x-internal-token",
        "s3cret",
        "\r\nkeep-alive:",
        "proxy-authenticate",
    ] {
        assert!(
            !text.contains(field),
            "{field:?} reached the client: {text:?}"
        );
    }
    // The only Connection field is the gateway's own answer to the client's close.
    let connection: Vec<_> = response
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("connection"))
        .map(|(_, value)| value.to_ascii_lowercase())
        .collect();
    assert_eq!(connection, ["close"]);

    assert_eq!(
        get(&gateway, &auth, "/api/alice/tasks/asks-close")
            .await
            .status,
        200
    );
    assert_eq!(get(&gateway, &auth, "/api/alice/tasks").await.status, 200);
    let seen = backend.seen();
    assert_eq!(
        seen.iter().map(|s| s.connection).collect::<Vec<_>>(),
        [1, 1, 2],
        "reused after the hop-by-hop answer, not after the one that said close"
    );
}

#[tokio::test]
async fn informational_responses_are_skipped_not_relayed() {
    let (backend, gateway, auth) = framing_setup().await;
    let raw = raw_exchange(
        gateway.addr,
        &build_request(
            "GET",
            "/api/alice/tasks/hints",
            &[("Authorization", &auth)],
            b"",
        ),
    )
    .await;
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text:?}");
    // One status line, the final one (a bare "103" could be part of the random request id).
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text:?}");
    assert!(!text.contains("link:"), "{text:?}");
    assert_eq!(parse_response(&raw).body, b"final");
    let next = get(&gateway, &auth, "/api/alice/tasks").await;
    assert_eq!(next.status, 200);
    assert_eq!(backend.connections(), 1);
}

#[tokio::test]
async fn head_and_204_responses_end_at_their_head() {
    let (backend, gateway, auth) = framing_setup().await;
    let head = raw_exchange(
        gateway.addr,
        &build_request(
            "HEAD",
            "/api/alice/tasks/head",
            &[("Authorization", &auth)],
            b"",
        ),
    )
    .await;
    let text = String::from_utf8_lossy(&head);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text:?}");
    assert!(
        text.to_ascii_lowercase().contains("content-length: 11\r\n"),
        "{text:?}"
    );
    assert!(
        text.ends_with("\r\n\r\n"),
        "no body after a HEAD answer: {text:?}"
    );
    let empty = get(&gateway, &auth, "/api/alice/tasks/no-content").await;
    assert_eq!(empty.status, 204);
    assert!(empty.body.is_empty());
    let next = get(&gateway, &auth, "/api/alice/tasks").await;
    assert_eq!(next.json()["ok"], true);
    let seen = backend.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].head.split(' ').next(), Some("HEAD"));
    // The HEAD answer declares a body it does not carry (Content-Length: 11): its connection is
    // not followed (see the late-body test below). The 204 declares none: its connection serves
    // the next request.
    assert_eq!(
        seen.iter().map(|s| s.connection).collect::<Vec<_>>(),
        [1, 2, 2],
        "{seen:?}"
    );
}

#[tokio::test]
async fn bytes_after_a_response_are_never_read_as_the_next_response() {
    let (backend, gateway, auth) = framing_setup().await;
    let first = get(&gateway, &auth, "/api/alice/tasks/extra").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body, b"ok");
    let second = get(&gateway, &auth, "/api/alice/tasks").await;
    assert_eq!(second.status, 200);
    assert_eq!(
        second.json()["ok"],
        true,
        "its own answer, not the stray one"
    );
    let seen = backend.seen();
    assert_eq!(
        seen.iter().map(|s| s.connection).collect::<Vec<_>>(),
        [1, 2],
        "the connection with stray bytes is dropped"
    );
}

#[tokio::test]
async fn ambiguous_or_malformed_responses_are_502_and_their_connections_dropped() {
    let (backend, gateway, auth) = framing_setup().await;
    let refused = [
        "cl-and-te",
        "two-lengths",
        "length-list",
        "gzip-te",
        "switch",
        "bad-status",
        "bad-name",
        "folded",
        "huge-head",
    ];
    for (index, name) in refused.iter().enumerate() {
        let response = get(&gateway, &auth, &format!("/api/alice/tasks/{name}")).await;
        assert_eq!(response.status, 502, "{name}");
        assert_eq!(response.json()["error"], "upstream_unavailable", "{name}");
        // The next request still works, on a connection of its own.
        let next = get(&gateway, &auth, "/api/alice/tasks").await;
        assert_eq!(next.status, 200, "after {name}");
        let seen = backend.seen();
        let (bad, good) = (&seen[2 * index], &seen[2 * index + 1]);
        assert!(bad.target().ends_with(name));
        assert_ne!(
            bad.connection, good.connection,
            "{name}: its connection was dropped"
        );
    }
}

#[tokio::test]
async fn a_malformed_chunk_cuts_the_response_and_drops_the_connection() {
    let (backend, gateway, auth) = framing_setup().await;
    let raw = raw_exchange(
        gateway.addr,
        &build_request(
            "GET",
            "/api/alice/tasks/broken-chunk",
            &[("Authorization", &auth)],
            b"",
        ),
    )
    .await;
    // The head may or may not have gone out before the bad chunk was met; either way the client
    // sees the connection close on an incomplete body, never a complete one.
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 200 OK\r\n"),
        "{text:?}"
    );
    assert!(
        !text.contains("helloXX"),
        "nothing past the chunk's size: {text:?}"
    );
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "the client must not see a complete body: {text:?}"
    );
    let next = get(&gateway, &auth, "/api/alice/tasks").await;
    assert_eq!(next.status, 200);
    assert_eq!(
        backend
            .seen()
            .iter()
            .map(|s| s.connection)
            .collect::<Vec<_>>(),
        [1, 2]
    );
}

#[tokio::test]
async fn a_response_trickled_byte_by_byte_arrives_intact() {
    let (backend, gateway, auth) = framing_setup().await;
    let response = get(&gateway, &auth, "/api/alice/tasks/trickle").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"abcdefg");
    let next = get(&gateway, &auth, "/api/alice/tasks").await;
    assert_eq!(next.status, 200);
    assert_eq!(backend.connections(), 1);
}

#[tokio::test]
async fn request_bodies_reach_the_backend_with_exactly_one_framing() {
    let (backend, gateway, auth) = framing_setup().await;
    let json = ("Content-Type", "application/json");
    // Content-Length from the client: forwarded as a length.
    let sized = request(
        gateway.addr,
        "POST",
        "/api/alice/tasks",
        &[("Authorization", &auth), json],
        b"{\"title\":\"sized\"}",
    )
    .await;
    assert_eq!(sized.status, 200);
    // Chunked from the client: forwarded chunked.
    let chunked = raw_exchange(
        gateway.addr,
        format!(
            "POST /api/alice/tasks/stream HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\
             Authorization: {auth}\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\n\r\n7\r\n{{\"title\r\nA\r\n\":\"chunk\"}}\r\n0\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(parse_response(&chunked).status, 200);
    // No body: a POST says so, a GET says nothing.
    let empty = request(
        gateway.addr,
        "POST",
        "/api/alice/tasks/empty",
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(empty.status, 200);
    let plain = get(&gateway, &auth, "/api/alice/tasks").await;
    assert_eq!(plain.status, 200);

    let seen = backend.seen();
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[0].field("content-length"), ["17"]);
    assert!(seen[0].field("transfer-encoding").is_empty());
    assert_eq!(seen[0].body, b"{\"title\":\"sized\"}");
    assert_eq!(seen[1].field("transfer-encoding"), ["chunked"]);
    assert!(seen[1].field("content-length").is_empty());
    assert_eq!(seen[1].body, b"{\"title\":\"chunk\"}");
    assert_eq!(seen[2].field("content-length"), ["0"]);
    assert!(seen[2].field("transfer-encoding").is_empty());
    assert!(seen[3].field("content-length").is_empty());
    assert!(seen[3].field("transfer-encoding").is_empty());
    assert!(
        seen.iter().all(|s| s.connection == 1),
        "one pooled connection for all four"
    );
}

#[tokio::test]
async fn a_connection_the_backend_closed_is_never_used_again() {
    let (backend, gateway, auth) = framing_setup().await;
    let first = get(&gateway, &auth, "/api/alice/tasks/close-after").await;
    assert_eq!(first.json()["closing"], true);
    // The backend has closed its end; the gateway must notice before writing a POST on it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let post = request(
        gateway.addr,
        "POST",
        "/api/alice/tasks",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        b"{\"title\":\"once\"}",
    )
    .await;
    assert_eq!(post.status, 200);
    let seen = backend.seen();
    assert_eq!(seen.len(), 2, "the POST reached the backend exactly once");
    assert_eq!(seen[1].connection, 2);
    assert_eq!(seen[1].body, b"{\"title\":\"once\"}");
}

/// A lenient backend refuses a POST at once without reading its body, and would read whatever
/// follows as its next request. The client sends the first part of the body, sees the answer,
/// then sends the rest: a request for bob's data. The rest must never reach the backend, and the
/// connection it would have arrived on is not used again; the client's own connection stays in
/// step (the rest was body).
#[tokio::test]
async fn after_an_early_answer_the_rest_of_the_body_never_reaches_the_backend() {
    let (backend, gateway, auth) = framing_setup().await;
    let smuggled = "GET /api/bob/tasks HTTP/1.1\r\nHost: b\r\nX-User-Id: bob\r\n\r\n";
    let first_part = "{\"title\":\"x\"}";
    let length = first_part.len() + smuggled.len();
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    stream
        .write_all(
            format!(
                "POST /api/alice/tasks/refuse-early HTTP/1.1\r\nHost: gw\r\n\
                 Authorization: {auth}\r\nContent-Type: application/json\r\n\
                 Content-Length: {length}\r\n\r\n{first_part}"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    while find(&answer, b"\r\n\r\n").is_none() {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the gateway closed before answering");
        answer.extend_from_slice(&chunk[..n]);
    }
    assert!(
        answer.starts_with(b"HTTP/1.1 401"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    stream.write_all(smuggled.as_bytes()).await.unwrap();
    // The client's connection reads the rest as body: a next request on it works.
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream
        .write_all(
            format!(
                "GET /api/alice/tasks HTTP/1.1\r\nHost: gw\r\nAuthorization: {auth}\r\n\
                 Connection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
        .await
        .expect("the next answer within 10 s")
        .unwrap();
    let next = parse_response(&rest);
    assert_eq!(next.status, 200);
    assert_eq!(next.json()["ok"], true);

    let seen = backend.seen();
    let targets: Vec<&str> = seen.iter().map(Seen::target).collect();
    assert_eq!(
        targets,
        ["/api/alice/tasks/refuse-early", "/api/alice/tasks"]
    );
    assert!(
        !seen.iter().any(|s| s.target().contains("bob")),
        "the smuggled request reached the backend: {seen:?}"
    );
    assert_eq!(
        seen[1].connection, 2,
        "the early-answer connection was not reused"
    );
}

/// A backend that sends a body after its answer to HEAD (a broken HEAD handler), a little later:
/// had the connection been reused, those bytes would have been read as the next request's
/// response. An answer that declares a body it does not carry is never followed on its connection.
#[tokio::test]
async fn a_body_sent_late_after_a_head_answer_is_never_taken_for_the_next_response() {
    let (backend, gateway, auth) = framing_setup().await;
    let head = raw_exchange(
        gateway.addr,
        &build_request(
            "HEAD",
            "/api/alice/tasks/late-head-body",
            &[("Authorization", &auth)],
            b"",
        ),
    )
    .await;
    assert!(head.starts_with(b"HTTP/1.1 200 OK\r\n"));
    let next = get(&gateway, &auth, "/api/alice/tasks").await;
    assert_eq!(next.status, 200);
    assert_eq!(next.json()["ok"], true, "its own answer, not the late body");
    let seen = backend.seen();
    assert_eq!(
        seen.iter().map(|s| s.connection).collect::<Vec<_>>(),
        [1, 2]
    );
}

/// A backend's own reason phrase reaches the client as it was sent.
#[tokio::test]
async fn a_custom_reason_phrase_is_relayed() {
    let (_backend, gateway, auth) = framing_setup().await;
    let raw = raw_exchange(
        gateway.addr,
        &build_request(
            "GET",
            "/api/alice/tasks/reason",
            &[("Authorization", &auth)],
            b"",
        ),
    )
    .await;
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.starts_with("HTTP/1.1 202 Queued For Later\r\n"),
        "{text:?}"
    );
    assert_eq!(parse_response(&raw).body, b"ok");
}
