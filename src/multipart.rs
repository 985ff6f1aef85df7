//! Owner fields in `multipart/form-data` bodies, checked as the body streams.
//!
//! PHP's `$_REQUEST`, Rails' `params`, Flask's `request.values` and Spring's `@RequestParam` read
//! multipart fields as query parameters, so a part named `user_id` must name the caller like the
//! query parameter would. Multipart bodies are usually uploads, too large to buffer, so each
//! frame is scanned before it is forwarded: part headers are parsed strictly, the content of an
//! owner part (short) is kept and compared at its closing delimiter, and the rest passes through.
//! A refusal ends the body with an error before the frame that proves it is sent, and the end of
//! the body is checked before its last frame goes, so the backend never gets a complete body
//! that fails the check: the frameworks above parse the whole body before the handler runs.
//!
//! Strict where parsers differ: one `Content-Disposition` with one plain `name` (no `name*`, no
//! backslash escapes), no `Content-Transfer-Encoding`, delimiters followed by CRLF or `--`, and
//! a body that ends with its close delimiter.

use http::HeaderMap;

use crate::authz;
use crate::error::GatewayError;

/// Part headers larger than this are refused.
const MAX_PART_HEADERS: usize = 8 * 1024;
/// An owner part's content longer than this cannot name the caller.
const MAX_OWNER_VALUE: usize = 1024;

/// Why a multipart body was refused mid-stream; found in the upstream error's source chain.
#[derive(Debug, Clone, thiserror::Error)]
#[error("multipart body refused: {}", .0.message())]
pub struct MultipartRefusal(pub GatewayError);

/// The boundary of a `multipart/form-data` body: `None` for any other type. A multipart type
/// that is ambiguous (two Content-Type fields, a list, no or two boundaries) is 415 or 400.
pub fn boundary(headers: &HeaderMap) -> Result<Option<Vec<u8>>, GatewayError> {
    let mentions = headers
        .get_all(http::header::CONTENT_TYPE)
        .iter()
        .any(|value| {
            value
                .as_bytes()
                .windows(9)
                .any(|window| window.eq_ignore_ascii_case(b"multipart"))
        });
    if !mentions {
        return Ok(None);
    }
    let mut values = headers.get_all(http::header::CONTENT_TYPE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(GatewayError::BadRequest(
            "more than one Content-Type header",
        ));
    };
    let text = value
        .to_str()
        .map_err(|_| GatewayError::UnsupportedMediaType)?;
    let mut parts = text.split(';');
    let media = parts.next().unwrap_or("").trim_matches([' ', '\t']);
    if !media.eq_ignore_ascii_case("multipart/form-data") {
        return Err(GatewayError::UnsupportedMediaType);
    }
    let mut found = None;
    for param in parts {
        let (name, value) = param
            .trim_matches([' ', '\t'])
            .split_once('=')
            .ok_or(GatewayError::UnsupportedMediaType)?;
        if !name.eq_ignore_ascii_case("boundary") {
            continue;
        }
        let value = match value.strip_prefix('"') {
            Some(quoted) => quoted
                .strip_suffix('"')
                .filter(|inner| !inner.contains(['"', '\\']))
                .ok_or(GatewayError::UnsupportedMediaType)?,
            None => value,
        };
        let valid = (1..=70).contains(&value.len())
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&b))
            && !value.ends_with(' ');
        if !valid || found.replace(value.as_bytes().to_vec()).is_some() {
            return Err(GatewayError::UnsupportedMediaType);
        }
    }
    found.map(Some).ok_or(GatewayError::UnsupportedMediaType)
}

/// The scanner for one body.
pub struct OwnerScan {
    /// `\r\n--boundary`: the body is scanned as if it started with `\r\n`, so that the first
    /// delimiter looks like every other.
    delimiter: Vec<u8>,
    names: Box<[Box<str>]>,
    user_id: Box<str>,
    state: State,
    /// Bytes seen but not yet decided on: at most a delimiter's length, or a part's headers.
    pending: Vec<u8>,
}

enum State {
    /// Before the first delimiter (the preamble is ignored, as every parser does).
    Preamble,
    /// Just after a delimiter: `--` (the end) or CRLF (a part) must follow.
    AfterDelimiter,
    /// Reading a part's headers up to the blank line.
    Headers,
    /// A part's content; an owner part's is kept.
    Content { owner: Option<Vec<u8>> },
    /// After the close delimiter: the epilogue is ignored.
    Done,
}

impl OwnerScan {
    pub fn new(boundary: &[u8], names: &[Box<str>], user_id: &str) -> OwnerScan {
        let mut delimiter = b"\r\n--".to_vec();
        delimiter.extend_from_slice(boundary);
        OwnerScan {
            delimiter,
            names: names.into(),
            user_id: user_id.into(),
            state: State::Preamble,
            pending: b"\r\n".to_vec(),
        }
    }

    /// Scans the next bytes of the body.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), MultipartRefusal> {
        if matches!(self.state, State::Done) {
            return Ok(());
        }
        self.pending.extend_from_slice(data);
        self.advance().map_err(MultipartRefusal)
    }

    /// The body has ended: it must have ended with its close delimiter.
    pub fn finish(&self) -> Result<(), MultipartRefusal> {
        match self.state {
            State::Done => Ok(()),
            _ => Err(MultipartRefusal(GatewayError::BadRequest(
                "the multipart body ends before its close delimiter",
            ))),
        }
    }

    fn advance(&mut self) -> Result<(), GatewayError> {
        loop {
            match self.state {
                State::Done => {
                    self.pending.clear();
                    return Ok(());
                }
                State::AfterDelimiter => {
                    if self.pending.len() < 2 {
                        return Ok(());
                    }
                    match &self.pending[..2] {
                        b"--" => self.state = State::Done,
                        b"\r\n" => {
                            self.pending.drain(..2);
                            self.state = State::Headers;
                        }
                        _ => {
                            return Err(GatewayError::BadRequest(
                                "a multipart delimiter is not followed by CRLF or --",
                            ))
                        }
                    }
                }
                State::Headers => {
                    let Some(end) = find(&self.pending, b"\r\n\r\n") else {
                        if self.pending.len() > MAX_PART_HEADERS {
                            return Err(GatewayError::BadRequest(
                                "multipart part headers are too large",
                            ));
                        }
                        return Ok(());
                    };
                    let owner = self.part_is_owner(&self.pending[..end])?;
                    self.pending.drain(..end + 4);
                    self.state = State::Content {
                        owner: owner.then(Vec::new),
                    };
                }
                State::Preamble | State::Content { .. } => {
                    let Some(at) = find(&self.pending, &self.delimiter) else {
                        // Keep what could be the start of a delimiter; the rest is content.
                        let keep = self.delimiter.len() - 1;
                        let cut = self.pending.len().saturating_sub(keep);
                        self.take_content(cut)?;
                        return Ok(());
                    };
                    self.take_content(at)?;
                    if let State::Content { owner: Some(value) } = &self.state {
                        if value.as_slice() != self.user_id.as_bytes() {
                            return Err(GatewayError::OwnerMismatch(
                                "an owner field in the body names another user",
                            ));
                        }
                    }
                    self.pending.drain(..self.delimiter.len());
                    self.state = State::AfterDelimiter;
                }
            }
        }
    }

    /// Moves the first `count` pending bytes out as content (kept only for an owner part).
    fn take_content(&mut self, count: usize) -> Result<(), GatewayError> {
        if let State::Content { owner: Some(value) } = &mut self.state {
            if value.len() + count > MAX_OWNER_VALUE {
                return Err(GatewayError::OwnerMismatch(
                    "an owner field in the body names another user",
                ));
            }
            value.extend_from_slice(&self.pending[..count]);
        }
        self.pending.drain(..count);
        Ok(())
    }

    /// Parses a part's header block: whether the part is an owner field.
    fn part_is_owner(&self, block: &[u8]) -> Result<bool, GatewayError> {
        let malformed = |why| Err(GatewayError::BadRequest(why));
        let Ok(block) = std::str::from_utf8(block) else {
            return malformed("multipart part headers are not UTF-8");
        };
        let mut name = None;
        let mut dispositions = 0;
        for line in block.split("\r\n") {
            let Some((field, value)) = line.split_once(':') else {
                return malformed("a multipart part header is malformed");
            };
            let field = field.trim_matches([' ', '\t']);
            if field.eq_ignore_ascii_case("content-transfer-encoding") {
                return malformed("multipart parts may not carry Content-Transfer-Encoding");
            }
            if !field.eq_ignore_ascii_case("content-disposition") {
                continue;
            }
            dispositions += 1;
            name = disposition_name(value)?;
        }
        let Some(name) = name.filter(|_| dispositions == 1) else {
            return malformed("a multipart part needs exactly one Content-Disposition with a name");
        };
        if self.names.iter().any(|owner| **owner == *name) {
            return Ok(true);
        }
        if self.names.iter().any(|owner| authz::read_as(&name, owner)) {
            return Err(GatewayError::BadTarget(
                "a multipart field name could be read as an owner parameter",
            ));
        }
        Ok(false)
    }
}

/// The `name` of `form-data; name="..."`; refuses what parsers read differently.
fn disposition_name(value: &str) -> Result<Option<String>, GatewayError> {
    let malformed = |why| Err(GatewayError::BadRequest(why));
    let mut params = value.split(';');
    let kind = params.next().unwrap_or("").trim_matches([' ', '\t']);
    if !kind.eq_ignore_ascii_case("form-data") {
        return malformed("a multipart part is not form-data");
    }
    let mut name = None;
    for param in params {
        let Some((key, value)) = param.trim_matches([' ', '\t']).split_once('=') else {
            return malformed("a Content-Disposition parameter is malformed");
        };
        let key = key.trim_matches([' ', '\t']);
        if key.eq_ignore_ascii_case("name*") {
            return malformed("a multipart field name may not be encoded (name*)");
        }
        if !key.eq_ignore_ascii_case("name") {
            continue;
        }
        let value = match value.strip_prefix('"') {
            Some(quoted) => match quoted.strip_suffix('"') {
                Some(inner) if !inner.contains(['"', '\\']) => inner,
                _ => return malformed("a multipart field name is malformed"),
            },
            None => value,
        };
        if name.replace(value.to_string()).is_some() {
            return malformed("a multipart part has two names");
        }
    }
    Ok(name)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(body: &[u8], split: usize) -> Result<(), GatewayError> {
        let mut scanner = OwnerScan::new(b"XyZ", &["user_id".into()], "alice");
        let split = split.min(body.len());
        for piece in [&body[..split], &body[split..]] {
            for byte_run in piece.chunks(7) {
                scanner.feed(byte_run).map_err(|r| r.0)?;
            }
        }
        scanner.finish().map_err(|r| r.0)
    }

    fn body(parts: &[(&str, &str)]) -> Vec<u8> {
        let mut out = b"preamble\r\n".to_vec();
        for (headers, content) in parts {
            out.extend_from_slice(b"--XyZ\r\n");
            out.extend_from_slice(headers.as_bytes());
            out.extend_from_slice(b"\r\n\r\n");
            out.extend_from_slice(content.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"--XyZ--\r\nepilogue");
        out
    }

    const NAME: &str = "Content-Disposition: form-data; name=\"user_id\"";

    #[test]
    fn owner_parts_must_name_the_caller() {
        let file = "Content-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\nContent-Type: text/plain";
        let good = body(&[
            (file, "--XyZ- not a delimiter \r\n-- nor this"),
            (NAME, "alice"),
        ]);
        for split in [0, 3, 20, 61, good.len()] {
            assert!(scan(&good, split).is_ok(), "split at {split}");
        }
        let bad = body(&[(file, "data"), (NAME, "bob")]);
        assert!(matches!(
            scan(&bad, 30),
            Err(GatewayError::OwnerMismatch(_))
        ));
        let long = body(&[(NAME, &"alice".repeat(300))]);
        assert!(matches!(
            scan(&long, 0),
            Err(GatewayError::OwnerMismatch(_))
        ));
        let look_alike = body(&[(
            "Content-Disposition: form-data; name=\"user_id[]\"",
            "alice",
        )]);
        assert!(matches!(
            scan(&look_alike, 0),
            Err(GatewayError::BadTarget(_))
        ));
    }

    #[test]
    fn ambiguous_parts_are_refused() {
        for headers in [
            "Content-Disposition: form-data; name*=UTF-8''user_id",
            "Content-Disposition: form-data; name=\"a\"; name=\"user_id\"",
            "Content-Disposition: form-data; name=\"user\\\"_id\"",
            "Content-Disposition: form-data; name=\"x\"\r\nContent-Disposition: form-data; name=\"user_id\"",
            "Content-Disposition: form-data; name=\"user_id\"\r\nContent-Transfer-Encoding: base64",
            "Content-Disposition: attachment; name=\"user_id\"",
            "Content-Type: text/plain",
        ] {
            let refused = scan(&body(&[(headers, "alice")]), 0);
            assert!(matches!(refused, Err(GatewayError::BadRequest(_))), "{headers}");
        }
        let unterminated = b"--XyZ\r\nContent-Disposition: form-data; name=\"user_id\"\r\n\r\nbob";
        assert!(matches!(
            scan(unterminated, 0),
            Err(GatewayError::BadRequest(_))
        ));
        let padded = b"--XyZ  \r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n--XyZ--";
        assert!(matches!(scan(padded, 0), Err(GatewayError::BadRequest(_))));
    }

    #[test]
    fn boundaries_are_read_strictly() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_str(value).unwrap(),
            );
            boundary(&headers)
        };
        assert_eq!(
            with("multipart/form-data; boundary=XyZ").unwrap(),
            Some(b"XyZ".to_vec())
        );
        assert_eq!(
            with("Multipart/Form-Data; charset=utf-8; boundary=\"a b'c\"").unwrap(),
            Some(b"a b'c".to_vec())
        );
        assert_eq!(with("application/json").unwrap(), None);
        for bad in [
            "multipart/form-data",
            "multipart/form-data; boundary=a; boundary=b",
            "multipart/mixed; boundary=a",
            "multipart/form-data, application/json; boundary=a",
            "multipart/form-data; boundary=\"a\\b\"",
            "multipart/form-data; boundary=",
        ] {
            assert!(with(bad).is_err(), "{bad}");
        }
    }
}
