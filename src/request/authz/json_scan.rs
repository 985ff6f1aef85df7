//! `_method` in a JSON body, checked as the body streams.
//!
//! Threat: Laravel reads a JSON body's top-level `_method` as a method override, exactly as it
//! reads a form's (`src/request/method_override.rs`). A JSON POST to a route that refuses some method is
//! therefore scanned, frame by frame and without buffering the body, for top-level keys that fold
//! to `_method`: such a key's value must be a string naming a method the route allows (else 405),
//! and it is held back until checked, so a refused value never reaches the backend. A refusal
//! ends the body early, which leaves the backend an incomplete (unparseable) document.
//!
//! Only the top level is tracked; nested values, and documents that are not an object, are
//! passed as they are: no framework reads an override from them. Malformed JSON is passed too,
//! since every JSON parser refuses it, and with it any `_method` it might hold.

use crate::core::error::GatewayError;
use crate::request::authz::multipart::ScanRefusal;
use crate::request::method_override::{OwnedMethodGuard, Place, OVERRIDE_FIELD};
use crate::request::names::fold_eq;

/// The longest key, raw with escapes, that is compared with `_method` (7 characters of up to 6
/// escape bytes each, rounded up); a longer key cannot fold to it.
const MAX_KEY: usize = 64;
/// The longest `_method` value held back; a longer one names no method.
const MAX_VALUE: usize = 1024;

/// The scanner for one JSON body.
pub struct JsonMethodScan {
    methods: OwnedMethodGuard,
    state: State,
    /// A key or `_method` value being read, raw (escapes undecoded).
    text: Vec<u8>,
    /// The previous byte was a `\` inside a string.
    escaped: bool,
    /// Body offset of the next byte to be fed.
    offset: u64,
    /// Body offset where the `_method` value being read starts: held back from there.
    held_from: Option<u64>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    /// Whitespace before the document.
    Start,
    /// After `{` or `,` at the top level: a key, or the end.
    BeforeKey,
    /// Inside a top-level key.
    Key,
    /// After a key: whitespace, then `:`.
    AfterKey { method: bool },
    /// After `:`: whitespace, then the value.
    BeforeValue { method: bool },
    /// Inside the `_method` value (a string).
    MethodValue,
    /// Inside another value: `depth` open brackets, maybe inside a string.
    OtherValue { depth: u32, in_string: bool },
    /// After a top-level value: whitespace, then `,` or `}`.
    AfterValue,
    /// The document ended, or it is not an object, or it is malformed: nothing more to check.
    Passed,
}

fn is_json_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
}

impl JsonMethodScan {
    pub fn new(methods: OwnedMethodGuard) -> JsonMethodScan {
        JsonMethodScan {
            methods,
            state: State::Start,
            text: Vec::new(),
            escaped: false,
            offset: 0,
            held_from: None,
        }
    }

    /// Scans the next bytes of the body. Returns the body offset up to which bytes may be
    /// forwarded: everything but a `_method` value not yet checked.
    pub fn feed(&mut self, data: &[u8]) -> Result<u64, ScanRefusal> {
        for &byte in data {
            self.step(byte).map_err(ScanRefusal)?;
            self.offset += 1;
        }
        Ok(self.held_from.unwrap_or(self.offset))
    }

    /// The body has ended. A `_method` value cut off by the end names no method.
    pub fn finish(&self) -> Result<(), ScanRefusal> {
        match self.state {
            State::MethodValue | State::BeforeValue { method: true } => Err(ScanRefusal(
                self.methods
                    .guard()
                    .check_field(OVERRIDE_FIELD, None, Place::Body)
                    .err()
                    .unwrap_or(GatewayError::BadRequest("the JSON body ends early")),
            )),
            _ => Ok(()),
        }
    }

    fn step(&mut self, byte: u8) -> Result<(), GatewayError> {
        self.state = match self.state {
            State::Passed => State::Passed,
            State::Start if is_json_space(byte) => State::Start,
            State::Start if byte == b'{' => State::BeforeKey,
            // A byte order mark: body-parser (Express) strips it and reads the document, which
            // this scan would otherwise pass over as not an object.
            State::Start if byte == 0xef => {
                return Err(GatewayError::BadRequest(
                    "a JSON body may not start with a byte order mark",
                ))
            }
            // Another value, or not JSON: no framework reads an override from it.
            State::Start => State::Passed,
            State::BeforeKey if is_json_space(byte) => State::BeforeKey,
            State::BeforeKey if byte == b'"' => {
                self.text.clear();
                self.escaped = false;
                State::Key
            }
            State::BeforeKey => State::Passed,
            State::Key => {
                if self.string_ends(byte) {
                    let method =
                        decoded(&self.text).is_some_and(|key| fold_eq(&key, OVERRIDE_FIELD));
                    State::AfterKey { method }
                } else {
                    // Too long to be `_method`: keep only a marker that it is.
                    if self.text.len() <= MAX_KEY {
                        self.text.push(byte);
                    }
                    State::Key
                }
            }
            State::AfterKey { method } if is_json_space(byte) => State::AfterKey { method },
            State::AfterKey { method } if byte == b':' => State::BeforeValue { method },
            State::AfterKey { .. } => State::Passed,
            State::BeforeValue { method } if is_json_space(byte) => State::BeforeValue { method },
            State::BeforeValue { method: true } if byte == b'"' => {
                self.text.clear();
                self.escaped = false;
                self.held_from = Some(self.offset);
                State::MethodValue
            }
            // A `_method` that is not a string names no method.
            State::BeforeValue { method: true } => {
                return self
                    .methods
                    .guard()
                    .check_field(OVERRIDE_FIELD, None, Place::Body)
            }
            State::BeforeValue { method: false } => self.other_value_starts(byte),
            State::MethodValue => {
                if self.string_ends(byte) {
                    let value = decoded(&self.text);
                    self.methods.guard().check_field(
                        OVERRIDE_FIELD,
                        value.as_deref().map(str::as_bytes),
                        Place::Body,
                    )?;
                    self.held_from = None;
                    State::AfterValue
                } else {
                    if self.text.len() >= MAX_VALUE {
                        return self
                            .methods
                            .guard()
                            .check_field(OVERRIDE_FIELD, None, Place::Body);
                    }
                    self.text.push(byte);
                    State::MethodValue
                }
            }
            State::OtherValue { depth, in_string } => self.other_value(byte, depth, in_string),
            State::AfterValue if is_json_space(byte) => State::AfterValue,
            State::AfterValue if byte == b',' => State::BeforeKey,
            State::AfterValue => State::Passed,
        };
        Ok(())
    }

    /// Inside a string: whether `byte` is its closing quote (tracking `\` escapes).
    fn string_ends(&mut self, byte: u8) -> bool {
        if self.escaped {
            self.escaped = false;
            return false;
        }
        match byte {
            b'\\' => {
                self.escaped = true;
                false
            }
            b'"' => true,
            _ => false,
        }
    }

    fn other_value_starts(&mut self, byte: u8) -> State {
        match byte {
            b'"' => {
                self.escaped = false;
                State::OtherValue {
                    depth: 0,
                    in_string: true,
                }
            }
            b'{' | b'[' => State::OtherValue {
                depth: 1,
                in_string: false,
            },
            b',' | b'}' | b']' | b':' => State::Passed,
            // A number or literal: runs until a delimiter at depth 0.
            _ => State::OtherValue {
                depth: 0,
                in_string: false,
            },
        }
    }

    fn other_value(&mut self, byte: u8, depth: u32, in_string: bool) -> State {
        if in_string {
            let in_string = !self.string_ends(byte);
            return match (in_string, depth) {
                (false, 0) => State::AfterValue,
                _ => State::OtherValue { depth, in_string },
            };
        }
        match byte {
            b'"' => {
                self.escaped = false;
                State::OtherValue {
                    depth,
                    in_string: true,
                }
            }
            b'{' | b'[' => State::OtherValue {
                depth: depth.saturating_add(1),
                in_string: false,
            },
            b'}' | b']' if depth > 1 => State::OtherValue {
                depth: depth - 1,
                in_string: false,
            },
            b'}' | b']' if depth == 1 => State::AfterValue,
            // The scalar ends where the object goes on or ends.
            b',' if depth == 0 => State::BeforeKey,
            b'}' if depth == 0 => State::Passed,
            _ if depth == 0 && is_json_space(byte) => State::AfterValue,
            _ => State::OtherValue {
                depth,
                in_string: false,
            },
        }
    }
}

/// A JSON string's raw contents, unescaped; `None` when they are not a valid JSON string.
fn decoded(raw: &[u8]) -> Option<String> {
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    serde_json::from_slice(&quoted).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::method_override::MethodGuard;

    /// A scanner with a guard allowing GET and POST.
    fn scanner() -> JsonMethodScan {
        let toml = "[upstream]\nurl = \"http://127.0.0.1:1\"\n[auth]\nsecret_env = \"S\"\n\
                    [[route]]\npath = \"/x\"\nmethods = [\"GET\", \"POST\"]\n";
        let config = crate::config::Config::parse(toml, "t.toml", &|_| {
            Some("0123456789abcdef0123456789abcdef".into())
        })
        .expect("valid config");
        let table = crate::request::routes::RouteTable::compile(&config.routes).expect("routes");
        let matched = table.lookup(&http::Method::POST, "/x").expect("route");
        JsonMethodScan::new(MethodGuard::new(matched.route, matched.allow).to_owned_guard())
    }

    /// Scans `body` fed `piece` bytes at a time.
    fn scan_in(body: &[u8], piece: usize) -> Result<u64, GatewayError> {
        let mut scan = scanner();
        let mut safe = 0;
        for chunk in body.chunks(piece.max(1)) {
            safe = scan.feed(chunk).map_err(|refusal| refusal.0)?;
        }
        scan.finish().map_err(|refusal| refusal.0)?;
        Ok(safe)
    }

    fn verdict(body: &str) -> Result<(), GatewayError> {
        let whole = scan_in(body.as_bytes(), body.len()).map(drop);
        for piece in [1, 2, 7] {
            let pieces = scan_in(body.as_bytes(), piece).map(drop);
            assert_eq!(
                whole.is_ok(),
                pieces.is_ok(),
                "{body}: whole {whole:?}, in pieces of {piece} {pieces:?}"
            );
        }
        whole
    }

    #[test]
    fn top_level_method_overrides_must_be_allowed() {
        for refused in [
            r#"{"_method":"DELETE"}"#,
            r#"{"title":"x","_method":"delete"}"#,
            r#"{"_METHOD":"PUT"}"#,
            r#"{"\u005fmethod":"PUT"}"#,
            r#"{"_method":"GET","_method":"DELETE"}"#,
            r#"{ "a" : [1, {"b": "}"}], "_method" : "PATCH" }"#,
            r#"{"a":"\"}","_method":"DELETE"}"#,
            r#"{"_method":7}"#,
            r#"{"_method":["DELETE"]}"#,
            r#"{"_method":"DEL"#,
        ] {
            assert!(
                matches!(verdict(refused), Err(GatewayError::MethodOverride { .. })),
                "{refused}"
            );
        }
        for allowed in [
            r#"{"_method":"GET"}"#,
            r#"{"_method":"post","title":"x"}"#,
            r#"{"nested":{"_method":"DELETE"}}"#,
            r#"[{"_method":"DELETE"}]"#,
            r#""_method""#,
            r#"{"title":"_method","n":1,"t":true,"z":null}"#,
            " \n{}",
            r#"{"a_method":"DELETE","_methods":"DELETE"}"#,
            "",
        ] {
            assert!(verdict(allowed).is_ok(), "{allowed}");
        }
    }

    #[test]
    fn a_byte_order_mark_is_refused() {
        for body in [
            &b"\xef\xbb\xbf{\"_method\":\"DELETE\"}"[..],
            b"\xef\xbb\xbf[]",
        ] {
            assert!(
                matches!(scan_in(body, 1), Err(GatewayError::BadRequest(_))),
                "{body:?}"
            );
        }
    }

    #[test]
    fn the_method_value_is_held_until_checked() {
        let body = br#"{"title":"x","_method":"GET","z":1}"#;
        let value_at = body.windows(5).position(|w| w == b"\"GET\"").unwrap();
        let mut scan = scanner();
        // Fed up to inside the value: nothing from the value's opening quote on may go yet.
        assert_eq!(scan.feed(&body[..value_at + 3]).unwrap(), value_at as u64);
        assert!(
            scan.finish().is_err(),
            "a body ending inside _method names no method"
        );
        // The rest clears it.
        assert_eq!(scan.feed(&body[value_at + 3..]).unwrap(), body.len() as u64);
        assert!(scan.finish().is_ok());
    }
}
