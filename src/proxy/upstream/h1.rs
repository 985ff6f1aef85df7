//! The lean HTTP/1.1 client: every request to the backend but WebSocket upgrades, over plain TCP
//! or TLS (`https://` backends, rustls).
//!
//! Why not hyper's client here: it drives each connection from a task of its own and hands the
//! request and the response body across channels, about a third of the gateway's user-space
//! instructions per request (callgrind, bench/callgrind.sh). Here the request task writes the
//! head in one write (and the body after it), and parses the response head in place; the body is
//! read from the socket by whoever polls it. WebSocket upgrades still go through hyper
//! (src/upstream/mod.rs).
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
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::TRANSFER_ENCODING;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, EXPECT};
use http::{Method, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::either::Either;

use super::Pools;
use crate::proxy::body::{BoxError, RequestBody};

/// A response head (status line and fields) larger than this is refused.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// As hyper's client: more fields than this is a malformed response.
const MAX_HEADERS: usize = 100;
/// Room in a response's header map, whatever the backend sent. hyper's server keeps the map of
/// each response it has written and parses the connection's next request into it; sized to the
/// response alone (5 fields from a typical backend), that map then grows, rehashing every field,
/// once the forwarding headers are added to the next request (callgrind: about 1,000
/// instructions of every request's 37,000). 24 holds a browser's request plus what we add.
const RESPONSE_MAP_CAPACITY: usize = 24;
/// `1xx` heads skipped before the final one; more is a backend misbehaving.
const MAX_INFORMATIONAL: usize = 8;
/// A chunk-size line (with extensions) longer than this is refused.
const MAX_CHUNK_LINE: usize = 4096;
/// How long the rest of a client's body may take to arrive (and be thrown away) once the backend
/// has answered.
const UPLOAD_LINGER: std::time::Duration = std::time::Duration::from_secs(60);
/// Read buffer growth step.
const READ_CHUNK: usize = 16 * 1024;

/// One idle or busy connection to the backend, with the bytes read from it but not yet used.
pub struct Conn {
    stream: Io,
    buffer: BytesMut,
}

/// The connection's bytes: plain TCP, or TLS over it (an `https://` backend).
pub type Io = Either<TcpStream, Box<tokio_rustls::client::TlsStream<TcpStream>>>;

/// The TCP socket under the connection.
fn tcp(io: &Io) -> &TcpStream {
    match io {
        Either::Left(tcp) => tcp,
        Either::Right(tls) => tls.get_ref().0,
    }
}

/// Why an exchange failed.
pub enum ExchangeError {
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

impl Conn {
    pub fn new(stream: Io) -> Conn {
        Conn {
            stream,
            buffer: BytesMut::new(),
        }
    }

    /// Whether an idle connection can take a request: nothing has arrived on its socket since
    /// its last response (no EOF, no reset, no stray bytes). Costs a syscall only when the reactor
    /// saw the socket become readable.
    pub fn is_reusable(&self) -> bool {
        if !self.buffer.is_empty() {
            return false;
        }
        let tcp = tcp(&self.stream);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match tcp.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // Readiness can be left over from the last read; only the socket knows. (On a TLS
            // connection the bytes would be a record: not reusable either way.)
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(tcp.try_read(&mut probe), Err(err) if err.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// For TLS, what the socket check cannot see: plaintext the TLS layer already decrypted and
    /// holds, or a close_notify. Reads with a no-op waker: anything but `Pending` means the
    /// connection has something it should not, or has ended.
    pub fn has_nothing_buffered(&mut self) -> bool {
        match &mut self.stream {
            Either::Left(_) => true,
            Either::Right(tls) => {
                let mut cx = Context::from_waker(std::task::Waker::noop());
                let mut probe = [0u8; 1];
                let mut probe = ReadBuf::new(&mut probe);
                Pin::new(tls.as_mut())
                    .poll_read(&mut cx, &mut probe)
                    .is_pending()
            }
        }
    }

    /// Writes the whole head; on failure, says how many bytes had been written.
    async fn write_request(&mut self, head: &[u8]) -> Result<(), usize> {
        let mut written = 0;
        while written < head.len() {
            let outcome = std::future::poll_fn(|cx| {
                Pin::new(&mut self.stream).poll_write(cx, &head[written..])
            })
            .await;
            match outcome {
                Ok(0) | Err(_) => return Err(written),
                Ok(n) => written += n,
            }
        }
        // TLS may hold the last record until flushed; plain TCP has nothing to flush.
        std::future::poll_fn(|cx| Pin::new(&mut self.stream).poll_flush(cx))
            .await
            .map_err(|_| written)
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        if self.buffer.capacity() - self.buffer.len() < 1024 {
            self.buffer.reserve(READ_CHUNK);
        }
        let read = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.stream),
            cx,
            &mut self.buffer
        ))?;
        Poll::Ready(Ok(read > 0))
    }
}

/// How the request body is delimited on the wire to the backend.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RequestFraming {
    /// No body.
    Empty,
    Length(u64),
    Chunked,
}

impl RequestFraming {
    /// From the body's size: exact sizes (a client's `Content-Length`, a buffered body) keep
    /// their length; streams of unknown size are chunked.
    pub fn of(body: &RequestBody) -> RequestFraming {
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
pub fn encode_request(
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
pub struct Upload {
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
pub async fn exchange(
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
    let (status, version, headers, reason) = std::future::poll_fn(|cx| {
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
    let keep_alive =
        version == Version::HTTP_11 && clean && !asks_to_close(&headers) && !answered_early;
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
struct HeadReading {
    informational: usize,
    received_any: bool,
}

impl Conn {
    /// The final response head, skipping `1xx` hints the client did not ask us for.
    fn poll_head(
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

/// The final response head off the front of `buffer`, if it is all there, skipping (and counting
/// in `informational`) the `1xx` hints before it: 100 and 103 are hints the client did not ask us
/// for; a 101 switches protocols on a request that asked for no switch.
fn take_final_head(
    buffer: &mut BytesMut,
    informational: &mut usize,
) -> Result<Option<Head>, &'static str> {
    loop {
        match parse_head(buffer)? {
            Some(head) if head.0 == StatusCode::SWITCHING_PROTOCOLS => {
                return Err("101 to a request without Upgrade")
            }
            Some(head) if head.0.is_informational() => {
                *informational += 1;
                if *informational > MAX_INFORMATIONAL {
                    return Err("too many 1xx responses");
                }
            }
            Some(head) => return Ok(Some(head)),
            None if buffer.len() > MAX_HEAD_BYTES => return Err("the response head is too large"),
            None => return Ok(None),
        }
    }
}

/// Status, version, fields, and the reason phrase when the backend's is not the standard one
/// (hyper's server writes it back as given; it was checked for control characters).
type Head = (
    StatusCode,
    Version,
    HeaderMap,
    Option<hyper::ext::ReasonPhrase>,
);

/// Parses one response head off the front of `buffer`, if it is all there. The field values are
/// slices of the head's bytes, not copies.
fn parse_head(buffer: &mut BytesMut) -> Result<Option<Head>, &'static str> {
    // Uninitialized field slots, and small span slots: this runs once per response, and zeroing
    // a hundred of each showed up in the profile.
    let mut fields = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buffer,
        &mut fields,
    );
    let length = match parsed {
        Ok(httparse::Status::Complete(length)) if has_bare_lf(&buffer[..length]) => {
            return Err("a bare LF in the response head")
        }
        Ok(httparse::Status::Complete(length)) if length <= MAX_HEAD_BYTES => length,
        Ok(httparse::Status::Complete(_)) => return Err("the response head is too large"),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err("the response has too many header fields")
        }
        Err(_) => return Err("the response head is malformed"),
    };
    let status = response
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or("the response status is malformed")?;
    let version = match response.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let reason = response
        .reason
        .filter(|reason| !reason.is_empty() && Some(*reason) != status.canonical_reason())
        .and_then(|reason| hyper::ext::ReasonPhrase::try_from(reason.as_bytes()).ok());
    // Where each name and value sits in the head, so the values can share its bytes. The head is
    // at most the buffer, well under 4 GiB.
    let base = buffer.as_ptr() as usize;
    let offset = |bytes: &[u8]| (bytes.as_ptr() as usize - base) as u32;
    let count = response.headers.len();
    let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
    for (span, field) in spans.iter_mut().zip(response.headers.iter()) {
        let name = field.name.as_bytes();
        *span = (
            offset(name),
            name.len() as u32,
            offset(field.value),
            field.value.len() as u32,
        );
    }
    let head = buffer.split_to(length).freeze();
    let mut headers = HeaderMap::with_capacity(count.max(RESPONSE_MAP_CAPACITY));
    for &(name_at, name_len, value_at, value_len) in &spans[..count] {
        let (name_at, name_len) = (name_at as usize, name_len as usize);
        let (value_at, value_len) = (value_at as usize, value_len as usize);
        let name = HeaderName::from_bytes(&head[name_at..name_at + name_len])
            .map_err(|_| "a response field name is malformed")?;
        let value = HeaderValue::from_maybe_shared(head.slice(value_at..value_at + value_len))
            .map_err(|_| "a response field value is malformed")?;
        headers.append(name, value);
    }
    Ok(Some((status, version, headers, reason)))
}

/// How the response body is delimited (RFC 9112 section 6.3), refusing every ambiguity; and
/// whether the connection may serve again afterwards as far as framing goes. A response that has
/// no body (HEAD, 204, 304) but declares one (`Transfer-Encoding`, a non-zero `Content-Length`)
/// may be followed by body bytes a backend sends anyway, which the next exchange would read as its
/// response: its connection is not reused.
fn framing(
    status: StatusCode,
    head_request: bool,
    headers: &HeaderMap,
) -> Result<(Framing, bool), &'static str> {
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        let declares_body = headers.contains_key(TRANSFER_ENCODING)
            || headers
                .get_all(CONTENT_LENGTH)
                .iter()
                .any(|value| value.as_bytes() != b"0");
        return Ok((Framing::Length(0), !declares_body));
    }
    let mut encodings = headers.get_all(TRANSFER_ENCODING).iter();
    if let Some(first) = encodings.next() {
        if encodings.next().is_some()
            || !first
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"chunked")
        {
            return Err("a Transfer-Encoding other than chunked");
        }
        if headers.contains_key(CONTENT_LENGTH) {
            return Err("both Transfer-Encoding and Content-Length");
        }
        return Ok((Framing::Chunked(Chunked::Size), true));
    }
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        let parsed = parse_length(value.as_bytes()).ok_or("a malformed Content-Length")?;
        if length.is_some_and(|seen| seen != parsed) {
            return Err("disagreeing Content-Lengths");
        }
        length = Some(parsed);
    }
    Ok((length.map_or(Framing::UntilClose, Framing::Length), true))
}

/// A whole response as the lean client reads it, from one buffer: what `read_response` found.
#[derive(Debug, PartialEq)]
pub struct ReadResponse {
    pub status: u16,
    pub body: Vec<u8>,
    /// Trailer fields of a chunked body.
    pub trailers: usize,
    /// Whether the connection could serve again as far as this response goes.
    pub reusable: bool,
    /// Bytes after the response's end.
    pub leftover: usize,
}

/// Reads one response (after any `1xx`) from a complete buffer with the same parser, framing
/// rules and chunked decoder as the client, fed in pieces of `piece` bytes: for the fuzz target
/// (fuzz/fuzz_targets/upstream_response.rs) and tests. A response that needs more bytes than
/// `input` holds is "incomplete"; one delimited by the connection's end takes the rest.
pub fn read_response(
    input: &[u8],
    head_request: bool,
    piece: usize,
) -> Result<ReadResponse, &'static str> {
    let piece = piece.max(1);
    let mut buffer = BytesMut::new();
    let mut fed = 0;
    let mut feed = |buffer: &mut BytesMut| -> bool {
        if fed == input.len() {
            return false;
        }
        let next = (fed + piece).min(input.len());
        buffer.extend_from_slice(&input[fed..next]);
        fed = next;
        true
    };
    let mut informational = 0;
    let (status, version, headers, _) = loop {
        match take_final_head(&mut buffer, &mut informational)? {
            Some(head) => break head,
            None if !feed(&mut buffer) => return Err("incomplete"),
            None => {}
        }
    };
    let (framing, clean) = framing(status, head_request, &headers)?;
    let mut body = Vec::new();
    let mut trailers = 0;
    let mut reusable = clean && version == Version::HTTP_11 && !asks_to_close(&headers);
    match framing {
        Framing::Length(mut remaining) => {
            while remaining > 0 {
                if buffer.is_empty() && !feed(&mut buffer) {
                    return Err("incomplete");
                }
                let take = buffer
                    .len()
                    .min(usize::try_from(remaining).unwrap_or(usize::MAX));
                body.extend_from_slice(&buffer.split_to(take));
                remaining -= take as u64;
            }
        }
        Framing::Chunked(mut state) => loop {
            match decode_chunked(&mut state, &mut buffer)? {
                Decoded::Data(data) => body.extend_from_slice(&data),
                Decoded::End(fields) => {
                    trailers = fields.map_or(0, |fields| fields.len());
                    break;
                }
                Decoded::NeedMore if !feed(&mut buffer) => return Err("incomplete"),
                Decoded::NeedMore => {}
            }
        },
        Framing::UntilClose | Framing::Done => {
            while feed(&mut buffer) {}
            body.extend_from_slice(&buffer.split());
            reusable = false;
        }
    }
    while feed(&mut buffer) {}
    Ok(ReadResponse {
        status: status.as_u16(),
        body,
        trailers,
        reusable: reusable && buffer.is_empty(),
        leftover: buffer.len(),
    })
}

/// Digits only, as RFC 9110 section 8.6 has it, and small enough to count.
fn parse_length(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 18 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        bytes
            .iter()
            .fold(0, |total, digit| total * 10 + u64::from(digit - b'0')),
    )
}

fn asks_to_close(headers: &HeaderMap) -> bool {
    headers.get_all(CONNECTION).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
    })
}

#[derive(Debug, PartialEq)]
enum Framing {
    /// This many bytes are left.
    Length(u64),
    Chunked(Chunked),
    /// Everything until the backend closes; the connection cannot be reused.
    UntilClose,
    /// Ended; the connection has been given back or dropped.
    Done,
}

#[derive(Debug, PartialEq)]
enum Chunked {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// The CRLF after chunk data.
    DataEnd,
    /// After the last chunk: trailer fields, then the final CRLF.
    Trailers,
}

/// The response body, read from the connection as it is polled. At its exact end the connection
/// goes back to the pool; dropped before that, the connection is closed.
pub struct LeanBody {
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
    pools: Arc<Pools>,
    /// When the exchange began: a body read in the first poll (nearly all of them) dates the
    /// connection's return to the pool from here, with no clock read; a longer one reads the clock.
    started: tokio::time::Instant,
    polled: bool,
}

impl LeanBody {
    fn finish(&mut self) {
        self.framing = Framing::Done;
        if let Some(mut conn) = self.conn.take() {
            if self.keep_alive && conn.buffer.is_empty() && conn.has_nothing_buffered() {
                let now = if self.polled {
                    tokio::time::Instant::now()
                } else {
                    self.started
                };
                self.pools.put_lean(conn, now);
            }
        }
    }

    /// Drops the connection: the body will not be read to its end.
    pub fn forfeit(&mut self) {
        self.framing = Framing::Done;
        self.conn = None;
    }

    fn broken(&mut self, why: &'static str) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.forfeit();
        Poll::Ready(Some(Err(BodyError(why))))
    }
}

/// The backend's body broke off or was malformed; the client's response is cut short.
#[derive(Debug, thiserror::Error)]
#[error("upstream response body: {0}")]
pub struct BodyError(&'static str);

impl Body for LeanBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let result = this.poll_body(cx);
        this.polled = true;
        result
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done | Framing::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(remaining) => SizeHint::with_exact(remaining),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

impl LeanBody {
    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut self.framing {
                Framing::Done => return Poll::Ready(None),
                Framing::Length(0) => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Framing::Length(remaining) => {
                    if !conn.buffer.is_empty() {
                        let take = conn
                            .buffer
                            .len()
                            .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                        *remaining -= take as u64;
                        let data = conn.buffer.split_to(take).freeze();
                        if *remaining == 0 {
                            // hyper may not poll again once it has the declared length.
                            self.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Framing::UntilClose => {
                    if !conn.buffer.is_empty() {
                        let data = conn.buffer.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    match ready!(conn.poll_fill(cx)) {
                        Ok(true) => continue,
                        Ok(false) => {
                            self.keep_alive = false;
                            self.finish();
                            return Poll::Ready(None);
                        }
                        Err(_) => return self.broken("the connection broke"),
                    }
                }
                Framing::Chunked(state) => match decode_chunked(state, &mut conn.buffer) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::End(trailers)) => {
                        self.finish();
                        return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
                    }
                    Ok(Decoded::NeedMore) => {}
                    Err(why) => return self.broken(why),
                },
            }
            // The buffer holds nothing usable: read more.
            match ready!(conn.poll_fill(cx)) {
                Ok(true) => {}
                Ok(false) => return self.broken("the backend closed before the end of the body"),
                Err(_) => return self.broken("the connection broke"),
            }
        }
    }
}

enum Decoded {
    Data(Bytes),
    /// The last chunk and the trailer section were read; trailers if there were any.
    End(Option<HeaderMap>),
    NeedMore,
}

/// Advances the chunked decoder over what `buffer` holds (RFC 9112 section 7.1). Chunk data is
/// passed on as it arrives, a slice of the read buffer.
fn decode_chunked(state: &mut Chunked, buffer: &mut BytesMut) -> Result<Decoded, &'static str> {
    loop {
        match state {
            Chunked::Size => {
                let Some(line_end) = find_crlf(buffer, MAX_CHUNK_LINE)? else {
                    return Ok(Decoded::NeedMore);
                };
                let line = &buffer[..line_end];
                let digits_end = line
                    .iter()
                    .position(|b| !b.is_ascii_hexdigit())
                    .unwrap_or(line.len());
                let (digits, rest) = line.split_at(digits_end);
                if digits.is_empty() || digits.len() > 15 {
                    return Err("a malformed chunk size");
                }
                // After the size only an extension may follow (`;name[=value]`, which we skip),
                // with optional whitespace before it.
                let rest = trim_blanks(rest);
                if !rest.is_empty()
                    && (rest[0] != b';' || rest.iter().any(|&b| b < 0x20 && b != b'\t'))
                {
                    return Err("a malformed chunk extension");
                }
                let size = digits.iter().fold(0u64, |total, &digit| {
                    total * 16 + u64::from(hex_value(digit))
                });
                let _ = buffer.split_to(line_end + 2);
                *state = if size == 0 {
                    Chunked::Trailers
                } else {
                    Chunked::Data(size)
                };
            }
            Chunked::Data(remaining) => {
                if buffer.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let take = buffer
                    .len()
                    .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                *remaining -= take as u64;
                let data = buffer.split_to(take).freeze();
                if *remaining == 0 {
                    *state = Chunked::DataEnd;
                }
                return Ok(Decoded::Data(data));
            }
            Chunked::DataEnd => {
                if buffer.len() < 2 {
                    return Ok(Decoded::NeedMore);
                }
                if &buffer[..2] != b"\r\n" {
                    return Err("chunk data longer than its size");
                }
                let _ = buffer.split_to(2);
                *state = Chunked::Size;
            }
            Chunked::Trailers => {
                if buffer.starts_with(b"\r\n") {
                    let _ = buffer.split_to(2);
                    return Ok(Decoded::End(None));
                }
                let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                return match httparse::parse_headers(buffer, &mut fields) {
                    Ok(httparse::Status::Complete((length, _)))
                        if has_bare_lf(&buffer[..length]) =>
                    {
                        Err("a bare LF in the trailer section")
                    }
                    Ok(httparse::Status::Complete((length, fields))) => {
                        let mut trailers = HeaderMap::with_capacity(fields.len());
                        for field in fields.iter() {
                            let name = HeaderName::from_bytes(field.name.as_bytes())
                                .map_err(|_| "a malformed trailer name")?;
                            let value = HeaderValue::from_bytes(field.value)
                                .map_err(|_| "a malformed trailer value")?;
                            trailers.append(name, value);
                        }
                        let _ = buffer.split_to(length);
                        Ok(Decoded::End(Some(trailers)))
                    }
                    Ok(httparse::Status::Partial) if buffer.len() <= MAX_HEAD_BYTES => {
                        Ok(Decoded::NeedMore)
                    }
                    Ok(httparse::Status::Partial) => Err("the trailer section is too large"),
                    Err(_) => Err("a malformed trailer section"),
                };
            }
        }
    }
}

/// The offset of the first CRLF, within `limit` bytes. A bare LF is malformed.
fn find_crlf(buffer: &[u8], limit: usize) -> Result<Option<usize>, &'static str> {
    match buffer.iter().take(limit + 1).position(|&b| b == b'\n') {
        Some(0) => Err("a bare LF in chunked framing"),
        Some(at) if buffer[at - 1] == b'\r' => Ok(Some(at - 1)),
        Some(_) => Err("a bare LF in chunked framing"),
        None if buffer.len() > limit => Err("a chunk-size line too long"),
        None => Ok(None),
    }
}

/// Leading spaces and tabs (the "bad whitespace" RFC 9112 tolerates before an extension), and
/// nothing else.
fn trim_blanks(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(bytes.len());
    &bytes[start..]
}

/// A line feed not preceded by a carriage return: httparse accepts one as a line end, a backend
/// that decoded `%0a` into a field would produce one, and a proxy that reads it as a line end
/// while others do not is how responses get split.
fn has_bare_lf(section: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', section).any(|at| at == 0 || section[at - 1] != b'\r')
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
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
        let (status, _, headers, _) = parse_head(&mut buffer)?.expect("complete");
        framing(status, head_request, &headers)
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
