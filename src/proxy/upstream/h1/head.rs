//! The lean HTTP/1.1 client's response head: parsed in place with httparse, informational answers skipped, and the body's framing decided strictly (a Content-Length and Transfer-Encoding together, disagreeing lengths, a coding other than chunked, a bare LF: 502).

use crate::proxy::upstream::h1::conn::MAX_HEAD_BYTES;
use crate::proxy::upstream::h1::framing::decode_chunked;
use crate::proxy::upstream::h1::framing::framing;
use crate::proxy::upstream::h1::framing::has_bare_lf;
use crate::proxy::upstream::h1::framing::Decoded;
use crate::proxy::upstream::h1::framing::Framing;
use crate::proxy::upstream::h1::framing::MAX_HEADERS;
use bytes::BytesMut;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Version};
use std::mem::MaybeUninit;

/// Room in a response's header map, whatever the backend sent. hyper's server keeps the map of
/// each response it has written and parses the connection's next request into it; sized to the
/// response alone (5 fields from a typical backend), that map then grows, rehashing every field,
/// once the forwarding headers are added to the next request (callgrind: about 1,000
/// instructions of every request's 37,000). 24 holds a browser's request plus what we add.
pub(crate) const RESPONSE_MAP_CAPACITY: usize = 24;

/// `1xx` heads skipped before the final one; more is a backend misbehaving.
pub(crate) const MAX_INFORMATIONAL: usize = 8;

/// The final response head off the front of `buffer`, if it is all there, skipping (and counting
/// in `informational`) the `1xx` hints before it: 100 and 103 are hints the client did not ask us
/// for; a 101 switches protocols on a request that asked for no switch.
pub(crate) fn take_final_head(
    buffer: &mut BytesMut,
    informational: &mut usize,
) -> Result<Option<Head>, &'static str> {
    loop {
        match parse_head(buffer)? {
            Some(head) if head.status == StatusCode::SWITCHING_PROTOCOLS => {
                return Err("101 to a request without Upgrade")
            }
            Some(head) if head.status.is_informational() => {
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

/// One response head.
pub(crate) struct Head {
    pub(crate) status: StatusCode,
    pub(crate) version: Version,
    /// The fields, less a `Connection` field that holds nothing but `close` and `keep-alive`:
    /// that one speaks only of this connection (`closes` keeps what it said), and leaving it out
    /// here spares every response a lookup, a copy and a removal in the hop-by-hop pass (nginx
    /// sends `Connection: keep-alive` on each). One that nominates other fields stays, so that
    /// they are removed with it.
    pub(crate) headers: HeaderMap,
    /// The reason phrase when the backend's is not the standard one (hyper's server writes it
    /// back as given; it was checked for control characters).
    pub(crate) reason: Option<hyper::ext::ReasonPhrase>,
    /// A `Connection` field asked to close the connection after this response.
    pub(crate) closes: bool,
}

/// Parses one response head off the front of `buffer`, if it is all there. The field values are
/// slices of the head's bytes, not copies.
pub(crate) fn parse_head(buffer: &mut BytesMut) -> Result<Option<Head>, &'static str> {
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
    let mut closes = false;
    for &(name_at, name_len, value_at, value_len) in &spans[..count] {
        let (name_at, name_len) = (name_at as usize, name_len as usize);
        let (value_at, value_len) = (value_at as usize, value_len as usize);
        let name = &head[name_at..name_at + name_len];
        let value = HeaderValue::from_maybe_shared(head.slice(value_at..value_at + value_len))
            .map_err(|_| "a response field value is malformed")?;
        if name.eq_ignore_ascii_case(b"connection") {
            let mut nominates = false;
            for token in value.as_bytes().split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    closes = true;
                } else if !token.is_empty() && !token.eq_ignore_ascii_case(b"keep-alive") {
                    nominates = true;
                }
            }
            if !nominates {
                continue;
            }
        }
        let name =
            HeaderName::from_bytes(name).map_err(|_| "a response field name is malformed")?;
        headers.append(name, value);
    }
    Ok(Some(Head {
        status,
        version,
        headers,
        reason,
        closes,
    }))
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
    let Head {
        status,
        version,
        headers,
        closes,
        ..
    } = loop {
        match take_final_head(&mut buffer, &mut informational)? {
            Some(head) => break head,
            None if !feed(&mut buffer) => return Err("incomplete"),
            None => {}
        }
    };
    let (framing, clean) = framing(status, head_request, &headers)?;
    let mut body = Vec::new();
    let mut trailers = 0;
    let mut reusable = clean && version == Version::HTTP_11 && !closes;
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
