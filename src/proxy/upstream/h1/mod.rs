//! The lean HTTP/1.1 client: every request to the backend but WebSocket upgrades, over plain TCP
//! or TLS (`https://` backends, rustls).
//!
//! Why not hyper's client here: it drives each connection from a task of its own and hands the
//! request and the response body across channels, about a third of the gateway's user-space
//! instructions per request (callgrind, bench/callgrind.sh). Here the request task writes the
//! head in one write (and the body after it), and parses the response head in place; the body is
//! read from the socket by whoever polls it. WebSocket upgrades still go through hyper
//! (src/proxy/upstream/mod.rs).
//!
//! Strict, since the response is relayed to a client over another connection: a head that is not
//! well-formed HTTP/1.1 (bare LF line ends included), a `Transfer-Encoding` other than `chunked`,
//! `Transfer-Encoding` with `Content-Length`, disagreeing or malformed `Content-Length`s, a `101`
//! nobody asked for, or a malformed chunk is a 502 (or a cut body), never a guess. A connection is
//! reused only when its response was read exactly to its end with nothing after it, the backend
//! did not ask to close it, the whole request body went out before the answer came, and a body-less
//! answer (HEAD, 204, 304) did not declare a body: each of those is a way for the backend's reading
//! of the connection and ours to part, and the next user's request would pay for it.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::header::TRANSFER_ENCODING;
use http::header::{HeaderMap, CONTENT_LENGTH, EXPECT};
use http::{Method, Response, Version};
use http_body::Body;
use tokio::io::AsyncWrite;

pub(crate) mod body;
pub(crate) mod conn;
pub(crate) mod framing;
pub(crate) mod head;

pub use body::{BodyError, LeanBody};
pub use conn::{Conn, Io, MAX_HEAD_BYTES};
pub use head::{read_response, ReadResponse};

use super::Pools;
use crate::proxy::body::{BoxError, RequestBody};
use crate::proxy::upstream::h1::framing::framing;
use crate::proxy::upstream::h1::framing::Framing;
use crate::proxy::upstream::h1::head::take_final_head;
use crate::proxy::upstream::h1::head::Head;

/// How long the rest of a client's body may take to arrive (and be thrown away) once the backend
/// has answered.
const UPLOAD_LINGER: std::time::Duration = std::time::Duration::from_secs(60);
/// Why an exchange failed.
pub(crate) enum ExchangeError {
    /// Not a byte of the request was written: it may go on another connection, whatever it is,
    /// with its body (untouched) given back.
    Unsent(Option<Box<Upload>>),
    /// The request was written and the connection closed before any response byte: a pooled
    /// connection that the backend closed as we used it.
    Stale,
    /// The backend broke the exchange or answered something that is not well-formed HTTP/1.1.
    Failed(&'static str),
    /// The client's body failed on its way (too large, or the client went away).
    Upload(BoxError),
}

/// How the request body is delimited on the wire to the backend.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum RequestFraming {
    /// No body.
    Empty,
    Length(u64),
    Chunked,
}

impl RequestFraming {
    /// From the body's size: exact sizes (a client's `Content-Length`, a buffered body) keep
    /// their length; streams of unknown size are chunked.
    pub(crate) fn of(body: &RequestBody) -> RequestFraming {
        if body.is_end_stream() {
            return RequestFraming::Empty;
        }
        match body.size_hint().exact() {
            Some(length) => RequestFraming::Length(length),
            None => RequestFraming::Chunked,
        }
    }
}

/// Serializes a request head: origin-form target, the (already rewritten) fields, and our own
/// framing. Framing fields the client sent are not copied, so this is the only framing the backend
/// sees. A body-less request whose method normally carries a body gets `Content-Length: 0`, so the
/// backend does not wait for one.
pub(crate) fn encode_request(
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    framing: RequestFraming,
) -> Vec<u8> {
    let mut size = method.as_str().len() + target.len() + 32;
    for (name, value) in headers {
        size += name.as_str().len() + value.len() + 4;
    }
    let mut head = Vec::with_capacity(size);
    head.extend_from_slice(method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        // Framing is ours alone; and hyper has already answered the client's `Expect`, so the
        // backend is never asked to hold off reading the body.
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING || name == EXPECT {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    match framing {
        RequestFraming::Empty => {
            if !matches!(
                *method,
                Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE
            ) {
                head.extend_from_slice(b"content-length: 0\r\n");
            }
        }
        RequestFraming::Length(length) => {
            head.extend_from_slice(b"content-length: ");
            head.extend_from_slice(length.to_string().as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        RequestFraming::Chunked => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// The request body on its way to the backend, framed as the head said.
pub(crate) struct Upload {
    body: RequestBody,
    chunked: bool,
    /// With `Content-Length` framing, the bytes still owed: a body that runs over or stops short
    /// of what the head promised fails instead of desynchronizing the connection.
    owed: u64,
    /// Framed bytes not written yet, in order.
    queue: VecDeque<Bytes>,
    /// The body has ended and its last bytes are queued.
    ended: bool,
    /// Bytes were written since the last completed flush: a TLS layer may still hold them, and
    /// nothing else would send them (reading never writes).
    unflushed: bool,
}

enum UploadError {
    /// The client's body failed (too large, or the client went away).
    Body(BoxError),
    /// The backend stopped taking bytes; it may still have answered.
    Write,
}

impl Upload {
    pub fn new(body: RequestBody, framing: RequestFraming) -> Upload {
        Upload {
            body,
            chunked: framing == RequestFraming::Chunked,
            owed: match framing {
                RequestFraming::Length(length) => length,
                _ => 0,
            },
            queue: VecDeque::new(),
            ended: false,
            unflushed: false,
        }
    }

    /// Writes what the body has to give, as long as the socket takes it. Ready once everything,
    /// the chunked terminator included, is written.
    fn poll_send(
        &mut self,
        stream: &mut Io,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), UploadError>> {
        loop {
            while !self.queue.is_empty() {
                let mut slices = [IoSlice::new(&[]); 4];
                let count = self.queue.len().min(slices.len());
                for (slice, bytes) in slices.iter_mut().zip(self.queue.iter()) {
                    *slice = IoSlice::new(bytes);
                }
                let written = match ready!(
                    Pin::new(&mut *stream).poll_write_vectored(cx, &slices[..count])
                ) {
                    Ok(0) | Err(_) => return Poll::Ready(Err(UploadError::Write)),
                    Ok(written) => written,
                };
                self.unflushed = true;
                self.consume(written);
            }
            // Before waiting on the client for more (or finishing), push out what a TLS layer may
            // still hold, until a flush completes; a no-op on plain TCP.
            if self.unflushed {
                if ready!(Pin::new(&mut *stream).poll_flush(cx)).is_err() {
                    return Poll::Ready(Err(UploadError::Write));
                }
                self.unflushed = false;
            }
            if self.ended {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.is_empty() => {}
                    Ok(data) if self.chunked => {
                        self.queue
                            .push_back(Bytes::from(format!("{:x}\r\n", data.len())));
                        self.queue.push_back(data);
                        self.queue.push_back(Bytes::from_static(b"\r\n"));
                    }
                    Ok(data) => {
                        if data.len() as u64 > self.owed {
                            return Poll::Ready(Err(UploadError::Body(
                                "the request body ran past its Content-Length".into(),
                            )));
                        }
                        self.owed -= data.len() as u64;
                        self.queue.push_back(data);
                    }
                    Err(frame) => {
                        if let (true, Ok(trailers)) = (self.chunked, frame.into_trailers()) {
                            self.end(Some(&trailers));
                        }
                    }
                },
                Some(Err(err)) => return Poll::Ready(Err(UploadError::Body(err))),
                None if !self.chunked && self.owed > 0 => {
                    return Poll::Ready(Err(UploadError::Body(
                        "the request body ended short of its Content-Length".into(),
                    )));
                }
                None => self.end(None),
            }
        }
    }

    /// Reads the rest of the client's body and throws it away, so the client's connection stays
    /// in step (what it still sends is body, not a next request), without any of it reaching the
    /// backend. Bounded by the body limit and `UPLOAD_LINGER`.
    fn discard_rest(self) {
        let mut body = self.body;
        tokio::spawn(tokio::time::timeout(
            UPLOAD_LINGER,
            std::future::poll_fn(move |cx| loop {
                match ready!(Pin::new(&mut body).poll_frame(cx)) {
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return Poll::Ready(()),
                }
            }),
        ));
    }

    /// Queues the end of the body: for chunked framing, the last chunk and any trailers.
    fn end(&mut self, trailers: Option<&HeaderMap>) {
        if self.ended {
            return;
        }
        self.ended = true;
        if !self.chunked {
            return;
        }
        let mut tail = b"0\r\n".to_vec();
        for (name, value) in trailers.into_iter().flatten() {
            tail.extend_from_slice(name.as_str().as_bytes());
            tail.extend_from_slice(b": ");
            tail.extend_from_slice(value.as_bytes());
            tail.extend_from_slice(b"\r\n");
        }
        tail.extend_from_slice(b"\r\n");
        self.queue.push_back(Bytes::from(tail));
    }

    fn consume(&mut self, mut written: usize) {
        while written > 0 {
            let Some(front) = self.queue.front_mut() else {
                return;
            };
            if written >= front.len() {
                written -= front.len();
                self.queue.pop_front();
            } else {
                let _ = front.split_to(written);
                written = 0;
            }
        }
    }
}

/// Writes the request head on `conn`, then the body (if any) while watching for the response,
/// and returns once the final response head is in. The response body is left on the connection,
/// for [`LeanBody`] to read. If the backend answered before the body was all sent, the rest is
/// read from the client and dropped (`Upload::discard_rest`), and the connection is not reused.
pub(crate) async fn exchange(
    mut conn: Conn,
    head: &[u8],
    mut upload: Option<Box<Upload>>,
    head_request: bool,
    pools: &Arc<Pools>,
    started: tokio::time::Instant,
) -> Result<Response<LeanBody>, ExchangeError> {
    if let Err(written) = conn.write_request(head).await {
        return Err(match written {
            0 => ExchangeError::Unsent(upload),
            _ => ExchangeError::Failed("the connection broke while the request was written"),
        });
    }
    let mut reading = HeadReading::default();
    let mut write_failed = false;
    let Head {
        status,
        version,
        headers,
        reason,
        closes,
    } = std::future::poll_fn(|cx| {
        if let Some(sending) = upload.as_mut() {
            match sending.poll_send(&mut conn.stream, cx) {
                Poll::Ready(Ok(())) => upload = None,
                Poll::Ready(Err(UploadError::Body(err))) => {
                    return Poll::Ready(Err(ExchangeError::Upload(err)))
                }
                // The backend may have answered early and stopped reading: read its answer.
                Poll::Ready(Err(UploadError::Write)) => {
                    upload = None;
                    write_failed = true;
                }
                Poll::Pending => {}
            }
        }
        conn.poll_head(cx, &mut reading)
    })
    .await?;
    let (framing, clean) =
        framing(status, head_request, &headers).map_err(ExchangeError::Failed)?;
    // The backend answered before the whole body was sent. Whatever it does with the rest, its
    // reading of this connection can no longer be trusted: a backend that answers without draining
    // would take the rest of the body (attacker's bytes) for a next request. So the rest never goes
    // upstream, and the connection is closed after this response.
    let answered_early = upload.is_some() || write_failed;
    if let Some(unsent) = upload {
        unsent.discard_rest();
    }
    let keep_alive = version == Version::HTTP_11 && clean && !closes && !answered_early;
    let mut body = LeanBody {
        conn: Some(conn),
        framing,
        keep_alive,
        pools: pools.clone(),
        started,
        polled: false,
    };
    if body.framing == Framing::Length(0) {
        body.finish();
    }
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    if let Some(reason) = reason {
        response.extensions_mut().insert(reason);
    }
    Ok(response)
}

/// Progress through the response head(s).
#[derive(Default)]
pub(crate) struct HeadReading {
    pub(crate) informational: usize,
    pub(crate) received_any: bool,
}

impl Conn {
    /// The final response head, skipping `1xx` hints the client did not ask us for.
    pub(crate) fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        reading: &mut HeadReading,
    ) -> Poll<Result<Head, ExchangeError>> {
        loop {
            if !self.buffer.is_empty() {
                reading.received_any = true;
                let head = take_final_head(&mut self.buffer, &mut reading.informational);
                if let Some(head) = head.map_err(ExchangeError::Failed)? {
                    return Poll::Ready(Ok(head));
                }
            }
            let why = match ready!(self.poll_fill(cx)) {
                Ok(true) => continue,
                _ if !reading.received_any => return Poll::Ready(Err(ExchangeError::Stale)),
                Ok(false) => "closed in the middle of the response head",
                Err(_) => "the connection broke in the response head",
            };
            return Poll::Ready(Err(ExchangeError::Failed(why)));
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use http::HeaderValue;
    use tokio::net::TcpStream;
    use tokio_util::either::Either;

    use super::framing::*;
    use super::head::*;
    use super::*;

    fn decode_all(
        input: &[u8],
        split: usize,
    ) -> Result<(Vec<u8>, Option<HeaderMap>), &'static str> {
        let mut state = Chunked::Size;
        let mut buffer = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match decode_chunked(&mut state, &mut buffer)? {
                Decoded::Data(data) => body.extend_from_slice(&data),
                Decoded::End(trailers) => {
                    assert!(buffer.is_empty(), "nothing left after the body");
                    return Ok((body, trailers));
                }
                Decoded::NeedMore => {
                    if fed == input.len() {
                        return Err("incomplete");
                    }
                    let next = (fed + split).min(input.len());
                    buffer.extend_from_slice(&input[fed..next]);
                    fed = next;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_at_every_split() {
        let input =
            b"5\r\nhello\r\n1;ext=\"x\"\r\n \r\nA\r\n0123456789\r\n0\r\nx-digest: abc\r\n\r\n";
        for split in 1..input.len() {
            let (body, trailers) = decode_all(input, split).unwrap();
            assert_eq!(body, b"hello 0123456789", "split {split}");
            let trailers = trailers.expect("trailers");
            assert_eq!(trailers.get("x-digest").unwrap(), "abc");
        }
        let (body, trailers) = decode_all(b"3\r\nabc\r\n0\r\n\r\n", 1).unwrap();
        assert_eq!(body, b"abc");
        assert!(trailers.is_none());
    }

    #[test]
    fn malformed_chunked_framing_is_refused() {
        for input in [
            &b"5\r\nhelloX\r\n0\r\n\r\n"[..], // data longer than its size
            b"5\nhello\r\n0\r\n\r\n",         // bare LF
            b"-5\r\nhello\r\n0\r\n\r\n",      // not hex
            b"\r\nhello\r\n0\r\n\r\n",        // no size
            b"1000000000000000\r\n",          // 16 hex digits: too large
            b"5 x\r\nhello\r\n0\r\n\r\n",     // junk after the size
            b"5\r\r\nhello\r\n0\r\n\r\n",     // CR before the line end
            b"5\x0c\r\nhello\r\n0\r\n\r\n",   // form feed after the size
            b"5\r;x\r\nhello\r\n0\r\n\r\n",   // CR before an extension
            b"0\r\nbad field\r\n\r\n",        // malformed trailer
        ] {
            assert!(
                decode_all(input, 3).is_err(),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let long_line = [b"1;".as_slice(), &[b'x'; MAX_CHUNK_LINE]].concat();
        assert!(decode_all(&long_line, 512).is_err());
    }

    fn head(text: &str) -> Result<Framing, &'static str> {
        head_of(text, false).map(|(framing, _)| framing)
    }

    fn head_of(text: &str, head_request: bool) -> Result<(Framing, bool), &'static str> {
        let mut buffer = BytesMut::from(text.as_bytes());
        let head = parse_head(&mut buffer)?.expect("complete");
        framing(head.status, head_request, &head.headers)
    }

    #[test]
    fn a_connection_field_of_close_or_keep_alive_is_read_and_left_out() {
        let parse = |text: &str| {
            let mut buffer = BytesMut::from(text.as_bytes());
            parse_head(&mut buffer).unwrap().expect("complete")
        };
        let head = parse("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\ncontent-length: 0\r\n\r\n");
        assert!(!head.closes);
        assert!(!head.headers.contains_key(http::header::CONNECTION));
        assert_eq!(head.headers.len(), 1);
        for close in [
            "close",
            "Keep-Alive, CLOSE",
            " close ,",
            "keep-alive, close",
        ] {
            let head = parse(&format!("HTTP/1.1 200 OK\r\nconnection: {close}\r\n\r\n"));
            assert!(head.closes, "{close:?}");
            assert!(
                !head.headers.contains_key(http::header::CONNECTION),
                "{close:?}"
            );
        }
        // A field that nominates others stays, for the hop-by-hop pass to remove them with it;
        // its close still counts, and so does a close in a second field.
        let head = parse(
            "HTTP/1.1 200 OK\r\nconnection: x-secret\r\nconnection: close\r\nx-secret: 1\r\n\r\n",
        );
        assert!(head.closes);
        assert_eq!(
            head.headers
                .get_all(http::header::CONNECTION)
                .iter()
                .collect::<Vec<_>>(),
            ["x-secret"]
        );
        assert_eq!(head.headers["x-secret"], "1");
        // A value a field may not hold is refused there too.
        let mut buffer = BytesMut::from(&b"HTTP/1.1 200 OK\r\nconnection: close\x01\r\n\r\n"[..]);
        assert!(parse_head(&mut buffer).is_err());
    }

    #[test]
    fn whole_responses_read_the_same_in_any_pieces() {
        let response = b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\n\
            transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n1;x=y\r\n!\r\n0\r\nx-d: 1\r\n\r\n";
        let whole = read_response(response, false, usize::MAX).unwrap();
        assert_eq!(
            whole,
            ReadResponse {
                status: 200,
                body: b"hello!".to_vec(),
                trailers: 1,
                reusable: true,
                leftover: 0,
            }
        );
        for piece in 1..response.len() {
            assert_eq!(
                read_response(response, false, piece).unwrap(),
                whole,
                "pieces of {piece}"
            );
        }
        let extra = [&response[..], b"HTTP/1.1 200 OK\r\n\r\n"].concat();
        let read = read_response(&extra, false, 7).unwrap();
        assert!(
            !read.reusable && read.leftover > 0,
            "bytes after the end: not reusable"
        );
        let closing = read_response(b"HTTP/1.1 200 OK\r\n\r\nto the end", false, 3).unwrap();
        assert_eq!(
            (closing.body.as_slice(), closing.reusable),
            (&b"to the end"[..], false)
        );
        assert_eq!(
            read_response(
                b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nshort",
                false,
                2
            ),
            Err("incomplete")
        );
    }

    #[test]
    fn bodiless_answers_that_declare_a_body_lose_their_connection() {
        let head = "HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n";
        assert_eq!(head_of(head, true), Ok((Framing::Length(0), false)));
        let head = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(head_of(head, true), Ok((Framing::Length(0), true)));
        let head = "HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(head_of(head, false), Ok((Framing::Length(0), true)));
        let head = "HTTP/1.1 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n";
        assert_eq!(head_of(head, false), Ok((Framing::Length(0), false)));
    }

    #[test]
    fn bare_line_feeds_are_refused_in_heads_and_trailers() {
        assert!(head("HTTP/1.1 200 OK\ncontent-length: 0\r\n\r\n").is_err());
        assert!(head("HTTP/1.1 200 OK\r\nlocation: /a\ncontent-length: 0\r\n\r\n").is_err());
        assert!(head("HTTP/1.1 200 OK\r\ncontent-length: 0\n\n").is_err());
        assert!(decode_all(b"0\r\nx-a: 1\n\r\n", 64).is_err());
        assert!(decode_all(b"0\r\nx-a: 1\r\n\n", 64).is_err());
    }

    #[tokio::test]
    async fn a_request_body_must_match_the_length_its_head_declared() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut stream = Either::Left(
            TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap(),
        );
        let _peer = listener.accept().await.unwrap();
        for (declared, expected) in [
            (3, "the request body ran past its Content-Length"),
            (10, "the request body ended short of its Content-Length"),
        ] {
            let body = RequestBody::buffered(Bytes::from_static(b"hello"));
            let mut upload = Upload::new(body, RequestFraming::Length(declared));
            let sent = std::future::poll_fn(|cx| upload.poll_send(&mut stream, cx)).await;
            match sent {
                Err(UploadError::Body(err)) => assert_eq!(err.to_string(), expected),
                _ => panic!("declared {declared}: the mismatch was not refused"),
            }
        }
    }

    #[test]
    fn framing_is_exact_or_refused() {
        assert_eq!(
            head("HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n").unwrap(),
            Framing::Length(12)
        );
        assert_eq!(
            head("HTTP/1.1 200 OK\r\ncontent-length: 7\r\ncontent-length: 7\r\n\r\n").unwrap(),
            Framing::Length(7)
        );
        assert_eq!(
            head("HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n").unwrap(),
            Framing::Chunked(Chunked::Size)
        );
        assert_eq!(
            head("HTTP/1.1 200 OK\r\n\r\n").unwrap(),
            Framing::UntilClose
        );
        assert_eq!(
            head("HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n").unwrap(),
            Framing::Length(0)
        );
        for refused in [
            "HTTP/1.1 200 OK\r\ncontent-length: 7\r\ncontent-length: 8\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 7, 7\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: +7\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 7\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbad name: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nx: a\r\n folded\r\n\r\n",
            "HTTP/1.1 20 OK\r\n\r\n",
        ] {
            assert!(head(refused).is_err(), "{refused:?}");
        }
    }

    #[test]
    fn request_heads_carry_only_our_framing() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("backend"));
        headers.insert("content-length", HeaderValue::from_static("0"));
        headers.insert("x-user-id", HeaderValue::from_static("alice"));
        let get = encode_request(
            &Method::GET,
            "/api/alice/tasks?x=1",
            &headers,
            RequestFraming::Empty,
        );
        assert_eq!(
            String::from_utf8(get).unwrap(),
            "GET /api/alice/tasks?x=1 HTTP/1.1\r\nhost: backend\r\nx-user-id: alice\r\n\r\n"
        );
        let post = encode_request(&Method::POST, "/", &headers, RequestFraming::Empty);
        assert!(String::from_utf8(post)
            .unwrap()
            .ends_with("x-user-id: alice\r\ncontent-length: 0\r\n\r\n"));
        let put = encode_request(&Method::PUT, "/", &headers, RequestFraming::Length(12));
        assert!(String::from_utf8(put)
            .unwrap()
            .ends_with("x-user-id: alice\r\ncontent-length: 12\r\n\r\n"));
        let stream = encode_request(&Method::POST, "/", &headers, RequestFraming::Chunked);
        let stream = String::from_utf8(stream).unwrap();
        assert!(stream.ends_with("x-user-id: alice\r\ntransfer-encoding: chunked\r\n\r\n"));
        assert!(!stream.contains("content-length"));
    }
}
