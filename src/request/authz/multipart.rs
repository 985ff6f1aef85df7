//! Owner fields in `multipart/form-data` bodies, checked as the body streams.
//!
//! PHP's `$_REQUEST`, Rails' `params`, Flask's `request.values` and Spring's `@RequestParam` read
//! multipart fields as query parameters, so a part named `user_id` must name the caller like the
//! query parameter would. Multipart bodies are usually uploads, too large to buffer, so the body
//! is scanned as it streams (`OwnerScan::feed`): headers and other parts pass on at once, and an
//! owner part's content (short) is held back until its closing delimiter shows it names the
//! caller. A refusal ends the body with an error, and the end of the body is checked before its
//! last frame goes, so the backend never gets a complete body, or an owner value, that fails the
//! check.
//!
//! The parsers above disagree on nearly everything a multipart body can bend (delimiters after a
//! bare LF, parts after the close delimiter, folded or LF-split part headers, parameter quoting,
//! encoded words), so this accepts one shape, the one browsers send, and refuses the rest:
//! - `Content-Type: multipart/form-data; boundary=...`, alone, with `charset=utf-8` at most;
//! - the body starts with `--boundary`; every `--boundary` follows a CRLF inside a part's
//!   content and is followed by CRLF (a part) or `--` (the end), and only a CRLF may follow the
//!   close delimiter;
//! - part headers are CRLF-separated lines of UTF-8 without control characters, not folded,
//!   only `Content-Disposition` (exactly one) and `Content-Type`;
//! - `Content-Disposition: form-data; name="..."` with an optional `filename="..."`: quoted,
//!   no escapes, no encoded words, a non-empty name.

use http::HeaderMap;

use crate::core::error::GatewayError;
use crate::request::method_override::{OwnedMethodGuard, Place, OVERRIDE_FIELD};

/// Part headers larger than this are refused.
const MAX_PART_HEADERS: usize = 4 * 1024;
/// A part header line longer than this is refused: PHP cuts lines at 5120 bytes (the rest
/// becomes a header line of its own) and current Rack ignores a disposition over 1536.
const MAX_PART_HEADER_LINE: usize = 1024;
/// An owner part's content longer than this cannot name the caller.
const MAX_OWNER_VALUE: usize = 1024;

/// Why a body scanned as it streams (multipart, or JSON for `_method`) was refused mid-stream;
/// found in the upstream error's source chain.
#[derive(Debug, Clone, thiserror::Error)]
#[error("request body refused: {}", .0.message())]
pub struct ScanRefusal(pub GatewayError);

fn malformed<T>(why: &'static str) -> Result<T, GatewayError> {
    Err(GatewayError::BadRequest(why))
}

/// The boundary of a `multipart/form-data` body: `None` for any other type. A multipart type
/// the backends could read with another boundary is 415 (400 for two Content-Type fields).
pub(crate) fn boundary(headers: &HeaderMap) -> Result<Option<Vec<u8>>, GatewayError> {
    if !super::media_type::content_type_mentions(headers, b"multipart") {
        return Ok(None);
    }
    let mut values = headers.get_all(http::header::CONTENT_TYPE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return malformed("more than one Content-Type header");
    };
    let text = value
        .to_str()
        .map_err(|_| GatewayError::UnsupportedMediaType)?;
    if text.contains(',') {
        return Err(GatewayError::UnsupportedMediaType);
    }
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
        if name.eq_ignore_ascii_case("charset") && value.eq_ignore_ascii_case("utf-8") {
            continue;
        }
        if !name.eq_ignore_ascii_case("boundary") {
            return Err(GatewayError::UnsupportedMediaType);
        }
        let value = match value.strip_prefix('"') {
            Some(quoted) => quoted
                .strip_suffix('"')
                .filter(|inner| {
                    !inner.ends_with(' ')
                        && inner
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"'()+_-./:? ".contains(&b))
                })
                .ok_or(GatewayError::UnsupportedMediaType)?,
            None if value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"'+_-.".contains(&b)) =>
            {
                value
            }
            None => return Err(GatewayError::UnsupportedMediaType),
        };
        if value.is_empty() || value.len() > 70 || found.replace(value.as_bytes()).is_some() {
            return Err(GatewayError::UnsupportedMediaType);
        }
    }
    found
        .map(|boundary| Some(boundary.to_vec()))
        .ok_or(GatewayError::UnsupportedMediaType)
}

/// The scanner for one body.
pub struct OwnerScan {
    /// `--boundary`.
    dash_boundary: Vec<u8>,
    names: Box<[Box<str>]>,
    user_id: Box<str>,
    /// When set, a `_method` part must name a method the route allows (held back like an owner
    /// part until checked).
    methods: Option<OwnedMethodGuard>,
    state: State,
    /// Bytes fed but not yet consumed by the state machine.
    pending: Vec<u8>,
    /// Body offset of `pending[0]`.
    consumed: u64,
    /// How much of `pending` the header search has looked at.
    searched: usize,
}

/// Which kind of part's content is held back.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Held {
    Nothing,
    Owner,
    Method,
}

enum State {
    /// The body must start with `--boundary`.
    Start,
    /// Just after a `--boundary`: CRLF (a part) or `--` (the end) must follow.
    AfterDelimiter,
    /// A part's headers, up to the blank line.
    Headers,
    /// A part's content. An owner or `_method` part's starts at body offset `held_from` and is
    /// held back until its delimiter shows what it says.
    Content { held_from: Option<u64>, held: Held },
    /// After the close delimiter: at most one CRLF may follow.
    Done { trailing: usize },
}

impl OwnerScan {
    pub fn new(boundary: &[u8], names: &[Box<str>], user_id: &str) -> OwnerScan {
        let mut dash_boundary = b"--".to_vec();
        dash_boundary.extend_from_slice(boundary);
        OwnerScan {
            dash_boundary,
            names: names.into(),
            user_id: user_id.into(),
            methods: None,
            state: State::Start,
            pending: Vec::new(),
            consumed: 0,
            searched: 0,
        }
    }

    /// Also holds `_method` parts to the route's methods (`src/request/method_override.rs`).
    pub fn with_method_guard(mut self, guard: OwnedMethodGuard) -> OwnerScan {
        self.methods = Some(guard);
        self
    }

    /// Scans the next bytes of the body. Returns the body offset up to which bytes may be
    /// forwarded: everything but an owner part's content not yet checked.
    pub fn feed(&mut self, data: &[u8]) -> Result<u64, ScanRefusal> {
        self.pending.extend_from_slice(data);
        self.advance().map_err(ScanRefusal)?;
        let fed = self.consumed + self.pending.len() as u64;
        Ok(match self.state {
            State::Content {
                held_from: Some(from),
                ..
            } => from,
            _ => fed,
        })
    }

    /// The body has ended: it must have ended with its close delimiter.
    pub fn finish(&self) -> Result<(), ScanRefusal> {
        match self.state {
            State::Done { .. } => Ok(()),
            _ => Err(ScanRefusal(GatewayError::BadRequest(
                "the multipart body ends before its close delimiter",
            ))),
        }
    }

    fn consume(&mut self, count: usize) {
        self.pending.drain(..count);
        self.consumed += count as u64;
    }

    fn advance(&mut self) -> Result<(), GatewayError> {
        loop {
            match self.state {
                State::Start => {
                    let need = self.dash_boundary.len();
                    let have = self.pending.len().min(need);
                    if self.pending[..have] != self.dash_boundary[..have] {
                        return malformed("a multipart body must start with its delimiter");
                    }
                    if have < need {
                        return Ok(());
                    }
                    self.consume(need);
                    self.state = State::AfterDelimiter;
                }
                State::AfterDelimiter => {
                    if self.pending.len() < 2 {
                        return Ok(());
                    }
                    match &self.pending[..2] {
                        b"--" => {
                            self.consume(2);
                            self.state = State::Done { trailing: 0 };
                        }
                        b"\r\n" => {
                            self.consume(2);
                            self.state = State::Headers;
                        }
                        _ => return malformed("a multipart delimiter is not followed by CRLF"),
                    }
                }
                State::Headers => {
                    // Searched from where the last look stopped: one-byte frames stay linear.
                    let from = self.searched.saturating_sub(3);
                    let end = memchr::memmem::find(&self.pending[from..], b"\r\n\r\n")
                        .map(|end| end + from);
                    self.searched = self.pending.len();
                    let Some(end) = end.filter(|&end| end <= MAX_PART_HEADERS) else {
                        if self.pending.len() > MAX_PART_HEADERS + 4 || end.is_some() {
                            return malformed("multipart part headers are too large");
                        }
                        return Ok(());
                    };
                    let held = self.held_part(&self.pending[..end])?;
                    self.consume(end + 4);
                    self.searched = 0;
                    self.state = State::Content {
                        held_from: (held != Held::Nothing).then_some(self.consumed),
                        held,
                    };
                }
                State::Content { held_from, held } => {
                    let Some(at) = memchr::memmem::find(&self.pending, &self.dash_boundary) else {
                        let content_so_far = self.consumed + self.pending.len() as u64;
                        self.check_held_length(held_from, held, content_so_far)?;
                        // An owner part's content stays whole until its delimiter. Otherwise
                        // keep what could be a delimiter's start and the CRLF before it.
                        if held_from.is_none() {
                            let keep = self.dash_boundary.len() + 1;
                            let cut = self.pending.len().saturating_sub(keep);
                            self.consume(cut);
                        }
                        return Ok(());
                    };
                    // Every `--boundary` is a delimiter to some parser: it must be a real one.
                    if at < 2 || &self.pending[at - 2..at] != b"\r\n" {
                        return malformed(
                            "the multipart boundary appears without a CRLF before it",
                        );
                    }
                    let content_end = self.consumed + (at - 2) as u64;
                    if let Some(from) = held_from {
                        self.check_held_length(held_from, held, content_end)?;
                        let start = (from - self.consumed) as usize;
                        let content = &self.pending[start..at - 2];
                        match (held, &self.methods) {
                            (Held::Method, Some(methods)) => methods.guard().check_field(
                                OVERRIDE_FIELD,
                                Some(content),
                                Place::Body,
                            )?,
                            _ if content != self.user_id.as_bytes() => {
                                return Err(GatewayError::OwnerMismatch(
                                    "an owner field in the body names another user",
                                ));
                            }
                            _ => {}
                        }
                    }
                    self.consume(at + self.dash_boundary.len());
                    self.state = State::AfterDelimiter;
                }
                State::Done { trailing } => {
                    let allowed = &b"\r\n"[trailing.min(2)..];
                    let extra = self.pending.len();
                    if extra > allowed.len() || self.pending[..] != allowed[..extra] {
                        return malformed("nothing may follow the multipart close delimiter");
                    }
                    self.consume(extra);
                    self.state = State::Done {
                        trailing: trailing + extra,
                    };
                    return Ok(());
                }
            }
        }
    }

    /// A held part's content is held back, so it stays short: longer than any user id or
    /// method, it names another user (or no allowed method).
    fn check_held_length(
        &self,
        held_from: Option<u64>,
        held: Held,
        up_to: u64,
    ) -> Result<(), GatewayError> {
        match (held_from, &self.methods) {
            (Some(from), methods)
                if up_to - from > (MAX_OWNER_VALUE + self.dash_boundary.len() + 3) as u64 =>
            {
                match (held, methods) {
                    (Held::Method, Some(methods)) => {
                        methods
                            .guard()
                            .check_field(OVERRIDE_FIELD, None, Place::Body)
                    }
                    _ => Err(GatewayError::OwnerMismatch(
                        "an owner field in the body names another user",
                    )),
                }
            }
            _ => Ok(()),
        }
    }

    /// Checks a part's header block against the one accepted shape; whether its content is held
    /// (an owner or `_method` part).
    fn held_part(&self, block: &[u8]) -> Result<Held, GatewayError> {
        let Ok(block) = std::str::from_utf8(block) else {
            return malformed("multipart part headers are not UTF-8");
        };
        let mut name = None;
        let mut content_types = 0;
        let mut identity_encoded = false;
        for line in block.split("\r\n") {
            if line.len() > MAX_PART_HEADER_LINE {
                return malformed("a multipart part header line is too long");
            }
            if line.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                return malformed("a multipart part header holds a control character");
            }
            if line.starts_with([' ', '\t']) {
                return malformed("a multipart part header is folded");
            }
            let Some((field, value)) = line.split_once(':') else {
                return malformed("a multipart part header is malformed");
            };
            if field.is_empty() || !field.bytes().all(crate::request::names::is_tchar) {
                return malformed("a multipart part header name is malformed");
            }
            if field.eq_ignore_ascii_case("content-type") {
                // `type/subtype` and a charset at most: Rack 2 finds a `name=` anywhere in the
                // header block, and current Rack names a part after its Content-Type.
                if !is_plain_media_type(value.trim_matches([' ', '\t'])) {
                    return malformed("a multipart part's Content-Type is not a plain media type");
                }
                content_types += 1;
            } else if field.eq_ignore_ascii_case("content-transfer-encoding") {
                // Apache HttpClient labels parts 8bit or binary: no decoding, so harmless.
                let value = value.trim_matches([' ', '\t']);
                if !["7bit", "8bit", "binary"]
                    .iter()
                    .any(|identity| value.eq_ignore_ascii_case(identity))
                {
                    return malformed("multipart parts may not carry a Content-Transfer-Encoding");
                }
                identity_encoded = true;
            } else if field.eq_ignore_ascii_case("content-disposition") {
                if name.replace(disposition_name(value)?).is_some() {
                    return malformed("a multipart part has two Content-Disposition headers");
                }
            } else {
                return malformed("a multipart part carries a header other than Content-Disposition and Content-Type");
            }
        }
        if content_types > 1 {
            return malformed("a multipart part has two Content-Type headers");
        }
        let Some(name) = name else {
            return malformed("a multipart part has no Content-Disposition");
        };
        let is_owner = self.names.iter().any(|owner| **owner == *name);
        let is_method = self.methods.is_some() && name == OVERRIDE_FIELD;
        if is_owner || is_method {
            // Werkzeug and Commons FileUpload decode a field by its part's charset.
            if content_types > 0 || identity_encoded {
                return malformed("an owner field's part may not carry a Content-Type or encoding");
            }
            return Ok(if is_owner { Held::Owner } else { Held::Method });
        }
        if self
            .names
            .iter()
            .any(|owner| crate::request::names::read_as(&name, owner))
        {
            return Err(GatewayError::BadTarget(
                "a multipart field name could be read as an owner parameter",
            ));
        }
        if let Some(methods) = &self.methods {
            // Not `_method` itself (held above): refuses names a parser reads as it.
            methods.guard().check_field(&name, Some(b""), Place::Body)?;
        }
        Ok(Held::Nothing)
    }
}

/// The name of `form-data; name="..."[; filename="..."]`, the one shape accepted.
fn disposition_name(value: &str) -> Result<String, GatewayError> {
    let mut params = split_outside_quotes(value.trim_matches([' ', '\t'])).into_iter();
    if params.next() != Some("form-data") {
        return malformed("a multipart part is not form-data");
    }
    let mut name = None;
    let mut filename = false;
    for param in params {
        let param = param.trim_matches([' ', '\t']);
        let Some((key, value)) = param.split_once('=') else {
            return malformed("a Content-Disposition parameter is malformed");
        };
        let Some(inner) = value
            .strip_prefix('"')
            .and_then(|quoted| quoted.strip_suffix('"'))
            .filter(|inner| !inner.contains(['"', '\\']))
        else {
            return malformed("a Content-Disposition parameter is not a plain quoted string");
        };
        match key {
            // A `;` or `=` in a name is a parameter boundary to a parser that splits the header
            // without minding quotes (`name="_method;"` is `_method` to it): field names never
            // need either, so they are refused.
            "name" if name.is_none() && !inner.contains([';', '=']) => name = Some(inner),
            // Rack 2 takes the last `\s+name=` anywhere in the header line for the part's name,
            // so `filename="x name=user_id;y"` names the part `user_id` to it.
            "filename" if !filename && !names_a_part(inner) => filename = true,
            _ => {
                return malformed(
                    "a Content-Disposition parameter is not name or filename, or repeats",
                )
            }
        }
    }
    match name {
        Some(name) if !name.is_empty() && !name.contains("=?") => Ok(name.to_string()),
        _ => malformed("a multipart part needs a plain, non-empty name"),
    }
}

/// Whether a quoted value holds whitespace followed by `name=` (any case): a part name to a
/// parser that finds `name=` anywhere in the Content-Disposition line.
fn names_a_part(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    lower.match_indices("name=").any(|(at, _)| {
        lower[..at]
            .chars()
            .next_back()
            .is_some_and(|before| before == ' ' || before == '\t')
    })
}

/// Splits on `;` outside double quotes (a browser sends `filename="a;b.txt"` as it is).
fn split_outside_quotes(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (index, byte) in text.bytes().enumerate() {
        match byte {
            b'"' => quoted = !quoted,
            b';' if !quoted => {
                pieces.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    pieces.push(&text[start..]);
    pieces
}

/// `token/token`, optionally `; charset=token` (RFC 9110 tokens).
fn is_plain_media_type(value: &str) -> bool {
    let is_token =
        |text: &str| !text.is_empty() && text.bytes().all(crate::request::names::is_tchar);
    let (media, charset) = match value.split_once(';') {
        Some((media, param)) => (media.trim_end_matches([' ', '\t']), Some(param)),
        None => (value, None),
    };
    let media_ok = media
        .split_once('/')
        .is_some_and(|(kind, subtype)| is_token(kind) && is_token(subtype));
    let charset_ok = charset.is_none_or(|param| {
        param
            .trim_matches([' ', '\t'])
            .split_once('=')
            .is_some_and(|(key, value)| key.eq_ignore_ascii_case("charset") && is_token(value))
    });
    media_ok && charset_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `body` in `piece`-byte frames; `Ok(safe)` is the last forwardable offset.
    fn scan_in(body: &[u8], piece: usize) -> Result<u64, GatewayError> {
        let mut scanner = OwnerScan::new(b"XyZ", &["user_id".into()], "alice");
        let mut safe = 0;
        for frame in body.chunks(piece.max(1)) {
            safe = scanner.feed(frame).map_err(|r| r.0)?;
        }
        scanner.finish().map_err(|r| r.0)?;
        Ok(safe)
    }

    fn scan(body: &[u8]) -> Result<(), GatewayError> {
        for piece in [1, 2, 3, 7, 64, body.len()] {
            let verdict = scan_in(body, piece);
            if verdict.is_err() {
                return verdict.map(drop);
            }
            assert_eq!(
                verdict.unwrap(),
                body.len() as u64,
                "all forwardable in the end"
            );
        }
        Ok(())
    }

    fn body(parts: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (headers, content) in parts {
            out.extend_from_slice(b"--XyZ\r\n");
            out.extend_from_slice(headers.as_bytes());
            out.extend_from_slice(b"\r\n\r\n");
            out.extend_from_slice(content.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"--XyZ--\r\n");
        out
    }

    const OWNER: &str = "Content-Disposition: form-data; name=\"user_id\"";
    const FILE: &str =
        "Content-Disposition: form-data; name=\"file\"; filename=\"a;b c.txt\"\r\nContent-Type: text/plain";

    #[test]
    fn browser_bodies_pass_and_owner_parts_must_name_the_caller() {
        assert!(scan(&body(&[
            (FILE, "--Xy \r\n--XyX nor --xyz\r\n-"),
            (OWNER, "alice")
        ]))
        .is_ok());
        // The boundary inside content is a delimiter to some parser: refused, not read around.
        let inside = body(&[(FILE, "a--XyZ- b"), (OWNER, "alice")]);
        assert!(matches!(scan(&inside), Err(GatewayError::BadRequest(_))));
        let apache = "Content-Disposition: form-data; name=\"f\"; filename=\"x.bin\"\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary";
        assert!(scan(&body(&[(apache, "\u{0}\u{1}"), (OWNER, "alice")])).is_ok());
        assert!(scan(&body(&[
            (FILE, ""),
            (
                "Content-Disposition: form-data; name=\"x\"; filename=\"\"",
                ""
            )
        ]))
        .is_ok());
        let mut no_crlf = body(&[(OWNER, "alice")]);
        no_crlf.truncate(no_crlf.len() - 2);
        assert!(scan(&no_crlf).is_ok());
        for bad in [
            body(&[(FILE, "data"), (OWNER, "bob")]),
            body(&[(OWNER, &"alice".repeat(300))]),
            body(&[(OWNER, "alice\r\n")]),
        ] {
            assert!(matches!(scan(&bad), Err(GatewayError::OwnerMismatch(_))));
        }
        let look_alike = body(&[("Content-Disposition: form-data; name=\"user id\"", "bob")]);
        assert!(matches!(scan(&look_alike), Err(GatewayError::BadTarget(_))));
    }

    /// An owner part's content is forwarded only once its delimiter showed it names the caller.
    #[test]
    fn owner_content_is_held_back_until_checked() {
        let whole = body(&[(FILE, "data"), (OWNER, "alice")]);
        let value_at = whole.windows(5).position(|w| w == b"alice").unwrap() as u64;
        let mut scanner = OwnerScan::new(b"XyZ", &["user_id".into()], "alice");
        let upto = value_at as usize + 5;
        assert_eq!(scanner.feed(&whole[..upto]).unwrap(), value_at);
        assert_eq!(scanner.feed(&whole[upto..]).unwrap(), whole.len() as u64);
    }

    #[test]
    fn every_bend_parsers_disagree_on_is_refused() {
        let refused = |body: &[u8]| matches!(scan(body), Err(GatewayError::BadRequest(_)));
        // Shapes of the body.
        for raw in [
            &b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n--XyZ--"[..],
            b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\n--XyZ\r\nContent-Disposition: form-data; name=\"user_id\"\r\n\r\nbob\r\n--XyZ--",
            b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n--XyZ\r\nContent-Disposition: form-data; name=\"user_id\"\r\n\r\nbob\r\n--XyZ--",
            b"--XyZ--\r\n--XyZ\r\nContent-Disposition: form-data; name=\"user_id\"\r\n\r\nbob\r\n--XyZ--\r\n",
            b"--XyZ  \r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n--XyZ--",
            b"--XyZ\r\nContent-Disposition: form-data; name=\"user_id\"\r\n\r\nbob",
            b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n--XyZ--epilogue",
        ] {
            assert!(refused(raw), "{}", String::from_utf8_lossy(raw));
        }
        // Part headers.
        for headers in [
            "X: 1\nContent-Disposition: form-data; name=\"user_id\"\r\nContent-Disposition: form-data; name=\"a\"",
            "Content-Disposition: form-data; name=\"a\"\r\n X: ; name=user_id",
            "Content-Disposition: form-data;\x0bname=\"user_id\"",
            "Content-Disposition: form-data; name= \"user_id\"",
            "Content-Disposition: form-data; name='user_id'",
            "Content-Disposition: form-data; name=user_id",
            "Content-Disposition: form-data; name=\"=?UTF-8?Q?user=5Fid?=\"",
            "Content-Disposition: form-data; name=\"\"\r\nContent-Type: user_id",
            "Content-Disposition: form-data; Name=\"user_id\"",
            "Content-Disposition : form-data; name=\"a\"",
            "Content-Disposition: form-data; name=\"a\"\r\nContent-ID: user_id",
            "Content-Disposition: form-data; name*=UTF-8''user_id",
            "Content-Disposition: form-data; name=\"a\"; name=\"user_id\"",
            "Content-Disposition: form-data; name=\"user\\\"_id\"",
            "Content-Disposition: form-data; name=\"a\"\r\nContent-Transfer-Encoding: base64",
            "Content-Disposition: form-data; name=\"a\"\r\nContent-Length: 5",
            "Content-Type: x Content-Disposition: y name=user_id\r\nContent-Disposition: form-data; name=\"a\"",
            "Content-Type: text/plain; charset=iso-8859-1\r\nContent-Disposition: form-data; name=\"user_id\"",
            "Content-Disposition: form-data; name=\"user_id\"\r\nContent-Transfer-Encoding: 8bit",
            &format!("Content-Type: text/plain; x={}\r\nContent-Disposition: form-data; name=\"a\"", "A".repeat(5100)),
            &format!("Content-Disposition: form-data; name=\"{}\"\r\nContent-Type: user_id", "a".repeat(1600)),
            "Content-Disposition: attachment; name=\"user_id\"",
            "Content-Type: text/plain",
            // Found by the multipart_scan fuzz target: `_method;` is `_method` to a parser that
            // splits on `;` without minding quotes.
            "Content-Disposition: form-data; name=\"_method;\"",
            "Content-Disposition: form-data; name=\"user_id;\"",
            "Content-Disposition: form-data; name=\"a=b\"",
            // Rack 2 finds the last `\s+name=` in the line.
            "Content-Disposition: form-data; name=\"f\"; filename=\"x name=user_id;y\"",
            "Content-Disposition: form-data; name=\"f\"; filename=\"x\tNAME=user_id\"",
        ] {
            assert!(refused(&body(&[(headers, "alice")])), "{headers:?}");
        }
        // Ordinary file names keep passing, `;` and `=` included.
        for headers in [
            "Content-Disposition: form-data; name=\"f\"; filename=\"a;b=c.txt\"",
            "Content-Disposition: form-data; name=\"f\"; filename=\"rename=1.txt\"",
        ] {
            assert!(scan(&body(&[(headers, "x")])).is_ok(), "{headers:?}");
        }
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
            with("multipart/form-data; boundary=----WebKitFormBoundaryx7Q").unwrap(),
            Some(b"----WebKitFormBoundaryx7Q".to_vec())
        );
        assert_eq!(
            with("Multipart/Form-Data; charset=utf-8; boundary=\"a b'c\"").unwrap(),
            Some(b"a b'c".to_vec())
        );
        assert_eq!(with("application/json").unwrap(), None);
        for bad in [
            "multipart/form-data",
            "multipart/form-data; boundary=a; boundary=b",
            "multipart/form-data; xboundary=EVIL; boundary=REAL",
            "multipart/form-data; boundary=REAL; xboundary=EVIL",
            "multipart/form-data; boundary=REAL,boundary=EVIL",
            "multipart/form-data; boundary=a b",
            "multipart/form-data; boundary*=UTF-8''EVIL",
            "multipart/form-data; charset=utf-16; boundary=a",
            "multipart/mixed; boundary=a",
            "multipart/form-data, application/json; boundary=a",
            "multipart/form-data; boundary=\"a\\b\"",
            "multipart/form-data; boundary=",
        ] {
            assert!(with(bad).is_err(), "{bad}");
        }
    }
}
