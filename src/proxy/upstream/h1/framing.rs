//! HTTP/1.1 wire framing, read strictly: which framing a response head declares (a
//! Content-Length and Transfer-Encoding together, disagreeing lengths, a coding other than
//! chunked: refused), and the chunked decoder.

use crate::proxy::upstream::h1::conn::MAX_HEAD_BYTES;
use bytes::{Bytes, BytesMut};
use http::header::TRANSFER_ENCODING;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH};
use http::StatusCode;

/// As hyper's client: more fields than this is a malformed response.
pub(crate) const MAX_HEADERS: usize = 100;

/// How the response body is delimited (RFC 9112 section 6.3), refusing every ambiguity; and
/// whether the connection may serve again afterwards as far as framing goes. A response that has
/// no body (HEAD, 204, 304) but declares one (`Transfer-Encoding`, a non-zero `Content-Length`)
/// may be followed by body bytes a backend sends anyway, which the next exchange would read as its
/// response: its connection is not reused.
pub(crate) fn framing(
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

/// Digits only, as RFC 9110 section 8.6 has it, and small enough to count.
pub(crate) fn parse_length(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 18 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        bytes
            .iter()
            .fold(0, |total, digit| total * 10 + u64::from(digit - b'0')),
    )
}

#[derive(Debug, PartialEq)]
pub(crate) enum Framing {
    /// This many bytes are left.
    Length(u64),
    Chunked(Chunked),
    /// Everything until the backend closes; the connection cannot be reused.
    UntilClose,
    /// Ended; the connection has been given back or dropped.
    Done,
}

/// Leading spaces and tabs (the "bad whitespace" RFC 9112 tolerates before an extension), and
/// nothing else.
pub(crate) fn trim_blanks(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(bytes.len());
    &bytes[start..]
}

/// A line feed not preceded by a carriage return: httparse accepts one as a line end, a backend
/// that decoded `%0a` into a field would produce one, and a proxy that reads it as a line end
/// while others do not is how responses get split.
pub(crate) fn has_bare_lf(section: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', section).any(|at| at == 0 || section[at - 1] != b'\r')
}

/// A chunk-size line (with extensions) longer than this is refused.
pub(crate) const MAX_CHUNK_LINE: usize = 4096;

#[derive(Debug, PartialEq)]
pub(crate) enum Chunked {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// The CRLF after chunk data.
    DataEnd,
    /// After the last chunk: trailer fields, then the final CRLF.
    Trailers,
}

pub(crate) enum Decoded {
    Data(Bytes),
    /// The last chunk and the trailer section were read; trailers if there were any.
    End(Option<HeaderMap>),
    NeedMore,
}

/// Advances the chunked decoder over what `buffer` holds (RFC 9112 section 7.1). Chunk data is
/// passed on as it arrives, a slice of the read buffer.
pub(crate) fn decode_chunked(
    state: &mut Chunked,
    buffer: &mut BytesMut,
) -> Result<Decoded, &'static str> {
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
pub(crate) fn find_crlf(buffer: &[u8], limit: usize) -> Result<Option<usize>, &'static str> {
    match buffer.iter().take(limit + 1).position(|&b| b == b'\n') {
        Some(0) => Err("a bare LF in chunked framing"),
        Some(at) if buffer[at - 1] == b'\r' => Ok(Some(at - 1)),
        Some(_) => Err("a bare LF in chunked framing"),
        None if buffer.len() > limit => Err("a chunk-size line too long"),
        None => Ok(None),
    }
}

pub(crate) fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}
