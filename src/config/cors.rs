//! `[cors]`: the origins a browser may call from, and what preflights answer.

use http::header::HeaderName;
use http::uri::Authority;
use raw::RawCors;
use std::time::Duration;
use toml::Spanned;

use super::*;

/// Which browser origins may call the API, and what they may send and read (`[cors]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsConfig {
    /// `None`: any origin (`"*"`, only without credentials). Otherwise exact origins, lower-case,
    /// as browsers serialize them: `scheme://host[:port]`.
    pub allow_origins: Option<Vec<String>>,
    pub allow_headers: Vec<HeaderName>,
    pub expose_headers: Vec<HeaderName>,
    pub max_age: Duration,
    pub allow_credentials: bool,
}

/// Browsers cap the preflight cache anyway (Firefox at 24 h, Chromium at 2 h).
pub(super) const MAX_CORS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

pub(super) fn validate_cors(
    ctx: &Ctx,
    raw: Option<&Spanned<RawCors>>,
) -> Result<Option<CorsConfig>, ConfigError> {
    let Some(cors) = raw.map(Spanned::get_ref) else {
        return Ok(None);
    };
    let allow_credentials = cors
        .allow_credentials
        .as_ref()
        .is_some_and(|v| *v.get_ref());
    let origins = cors.allow_origins.get_ref();
    if origins.is_empty() {
        return Err(ctx.error(
            &cors.allow_origins,
            "cors.allow_origins",
            "must name at least one origin, e.g. \"https://app.example.com\"",
        ));
    }
    let allow_origins = if origins.iter().any(|origin| origin.get_ref() == "*") {
        if origins.len() > 1 {
            return Err(ctx.error(
                &cors.allow_origins,
                "cors.allow_origins",
                "\"*\" (any origin) cannot be combined with other origins",
            ));
        }
        if let Some(credentials) = cors.allow_credentials.as_ref().filter(|v| *v.get_ref()) {
            return Err(ctx.error(
                credentials,
                "cors.allow_credentials",
                "cannot be true with allow_origins = [\"*\"]: browsers refuse credentials for any origin; list the origins",
            ));
        }
        None
    } else {
        let mut exact = Vec::with_capacity(origins.len());
        for (index, origin) in origins.iter().enumerate() {
            let key = format!("cors.allow_origins[{index}]");
            exact.push(
                validate_origin(origin.get_ref()).map_err(|why| ctx.error(origin, &key, why))?,
            );
        }
        Some(exact)
    };
    let header_names = |names: &Option<Vec<Spanned<String>>>, key: &str| {
        names
            .iter()
            .flatten()
            .map(|name| {
                HeaderName::from_bytes(name.get_ref().as_bytes())
                    .map_err(|_| ctx.error(name, key, "not a valid header name"))
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let allow_headers = match &cors.allow_headers {
        None => vec![http::header::AUTHORIZATION, http::header::CONTENT_TYPE],
        Some(_) => header_names(&cors.allow_headers, "cors.allow_headers")?,
    };
    let expose_headers = match &cors.expose_headers {
        None => vec![HeaderName::from_static("x-request-id")],
        Some(_) => header_names(&cors.expose_headers, "cors.expose_headers")?,
    };
    let max_age = validate_duration(
        ctx,
        &cors.max_age,
        "cors.max_age",
        Duration::from_secs(600),
        true,
    )?;
    if let (Some(value), true) = (&cors.max_age, max_age > MAX_CORS_MAX_AGE) {
        return Err(ctx.error(
            value,
            "cors.max_age",
            "must be at most 24h (browsers cap it anyway)",
        ));
    }
    Ok(Some(CorsConfig {
        allow_origins,
        allow_headers,
        expose_headers,
        max_age,
        allow_credentials,
    }))
}

/// An origin as a browser sends it in `Origin`: `scheme://host[:port]`, nothing else. Returned
/// lower-case, since browsers serialize scheme and host that way and matching is exact.
pub(super) fn validate_origin(origin: &str) -> Result<String, String> {
    const SHAPE: &str = "expected an origin such as \"https://app.example.com\" or \"http://localhost:3000\" (scheme, host and port only)";
    if origin == "null" {
        return Err("\"null\" is the origin of sandboxed frames and local files: any page can send it, so it cannot be allowed".into());
    }
    let (scheme, rest) = origin.split_once("://").ok_or_else(|| SHAPE.to_string())?;
    if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
        return Err(format!("{SHAPE}; the scheme must be http or https"));
    }
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', '*']) || rest.ends_with(':') {
        return Err(SHAPE.into());
    }
    let authority: Authority = rest.parse().map_err(|_| SHAPE.to_string())?;
    if authority.as_str() != rest || rest.contains('%') {
        return Err(SHAPE.into());
    }
    // Browsers never send the scheme's default port, nor a port with leading zeros: such an
    // entry would silently never match.
    if let Some(port) = authority.port() {
        let default = if scheme.eq_ignore_ascii_case("https") {
            443
        } else {
            80
        };
        if port.as_u16() == default {
            return Err(format!(
                "{SHAPE}; leave out the default port {default}, browsers do"
            ));
        }
        if port.as_str().starts_with('0') {
            return Err(format!("{SHAPE}; the port has a leading zero"));
        }
    }
    Ok(origin.to_ascii_lowercase())
}
