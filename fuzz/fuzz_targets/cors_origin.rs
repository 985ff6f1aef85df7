//! CORS origins: the input up to the first 0xFF is a configured origin (written into a
//! `[cors] allow_origins` entry), the rest a request's `Origin`. Checked: config parsing and the
//! match never panic; an accepted configured origin is `http(s)://host[:port]` in lower case with
//! nothing after the authority; a request origin is allowed only when it equals a configured one
//! byte for byte.

#![no_main]

use authgate::config::Config;
use authgate::cors::Cors;
use http::header::ORIGIN;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (configured, origin) = match data.iter().position(|&b| b == 0xff) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &b"https://app.example.com"[..]),
    };
    let Ok(configured) = std::str::from_utf8(configured) else {
        return;
    };
    let Ok(quoted) = serde_json::to_string(configured) else {
        return;
    };
    let toml = format!(
        "[upstream]\nurl = \"http://127.0.0.1:1\"\n[auth]\nsecret_env = \"S\"\n\
         [cors]\nallow_origins = [{quoted}]\n[[route]]\npath = \"/\"\nauth = \"public\"\n"
    );
    let Ok(config) = Config::parse(&toml, "fuzz.toml", &|_| {
        Some("fuzz-secret-fuzz-secret-fuzz-sec".to_string())
    }) else {
        return;
    };
    let Some(cors_config) = config.cors.as_ref() else {
        return;
    };
    if configured != "*" {
        let (scheme, authority) = configured
            .split_once("://")
            .expect("an accepted origin has a scheme");
        assert!(
            scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https"),
            "accepted scheme {scheme:?}"
        );
        assert!(
            !authority.is_empty()
                && !authority.contains(['/', '?', '#', '@', '%', '\\', ' '])
                && !authority.chars().any(char::is_control),
            "accepted origin {configured:?}"
        );
    }
    let cors = Cors::new(cors_config);
    let Ok(value) = HeaderValue::from_bytes(origin) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(ORIGIN, value);
    if let Some(allowed) = cors.allowed_origin(&headers) {
        if configured == "*" {
            assert_eq!(allowed.as_bytes(), b"*");
        } else {
            assert_eq!(
                allowed.as_bytes(),
                origin,
                "the answer must echo the request's origin"
            );
            assert_eq!(
                origin,
                configured.to_ascii_lowercase().as_bytes(),
                "allowed an origin that is not the configured one"
            );
        }
    }
});
