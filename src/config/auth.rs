//! `[auth]` and `[[auth.issuer]]`: who issues tokens, the keys that verify them, claim rules.

use crate::core::jose::JwsAlgorithm;
use http::header::HeaderName;
use http::Uri;
use raw::{IssuerField, RawAuth, RawIssuer};
use std::fmt;
use std::time::Duration;
use toml::Spanned;

use super::*;

/// A secret (an HMAC key, a password). Debug never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes>)", self.0.len())
    }
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// With several, each names its `issuer` and a token's `iss` selects one. Empty only when
    /// `[auth.session]` is the one way in (no bearer token can then be verified).
    pub issuers: Vec<IssuerConfig>,
    pub user_claim: String,
    pub identity_header: HeaderName,
    pub strip_headers: Vec<HeaderName>,
    pub owner_query_params: Vec<String>,
    /// Verified tokens remembered, so a repeated token skips signature verification.
    pub token_cache_size: usize,
    /// The longest a token may live, from its `iat` and from now (`auth.max_lifetime`).
    pub max_lifetime: Duration,
    /// `[auth.session]`: Better Auth session cookies are accepted too.
    pub session: Option<SessionConfig>,
}

impl AuthConfig {
    /// The first HMAC secret and HS* algorithm configured, for minting local test tokens.
    pub fn hmac_secret(&self) -> Option<(&Secret, JwsAlgorithm)> {
        self.issuers.iter().find_map(|issuer| {
            let secret = issuer.secret.as_ref()?;
            let algorithm = issuer.algorithms.iter().copied().find(|a| a.is_hmac())?;
            Some((secret, algorithm))
        })
    }
}

/// Who issues tokens and how to check them.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// When set, the token's `iss` must equal it (and selects this issuer).
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub algorithms: Vec<JwsAlgorithm>,
    pub leeway: Duration,
    pub secret: Option<Secret>,
    pub jwks_url: Option<Uri>,
    /// A local JWKS, read and checked at load time.
    pub jwks_file: Option<JwksFile>,
    pub jwks_refresh: Duration,
    pub jwks_cooldown: Duration,
    pub jwks_timeout: Duration,
    /// `auth` or `auth.issuer[N]`, for logs.
    pub label: String,
}

#[derive(Debug, Clone)]
pub struct JwksFile {
    pub path: String,
    pub json: Vec<u8>,
}

pub(super) const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// Better Auth's own tokens live 15 minutes; a day leaves room for any sane issuer.
pub(super) const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

pub(super) const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(300);

pub(super) const DEFAULT_JWKS_COOLDOWN: Duration = Duration::from_secs(30);

pub(super) const DEFAULT_JWKS_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) const DEFAULT_TOKEN_CACHE_SIZE: usize = 10_000;

/// The key-source keys shared by the single-issuer `[auth]` form and `[[auth.issuer]]` tables.
pub(super) struct IssuerFields<'a> {
    issuer: Option<&'a Spanned<String>>,
    audience: &'a Option<Spanned<String>>,
    algorithms: &'a Option<Spanned<Vec<Spanned<String>>>>,
    leeway: &'a Option<Spanned<String>>,
    secret_env: &'a Option<Spanned<String>>,
    jwks_url: &'a Option<Spanned<String>>,
    jwks_file: &'a Option<Spanned<String>>,
    jwks_refresh: &'a Option<Spanned<String>>,
    jwks_cooldown: &'a Option<Spanned<String>>,
    jwks_timeout: &'a Option<Spanned<String>>,
}

impl<'a> IssuerFields<'a> {
    fn of_table(table: &'a RawIssuer) -> IssuerFields<'a> {
        IssuerFields {
            issuer: table.issuer.as_ref(),
            audience: &table.audience,
            algorithms: &table.algorithms,
            leeway: &table.leeway,
            secret_env: &table.secret_env,
            jwks_url: &table.jwks_url,
            jwks_file: &table.jwks_file,
            jwks_refresh: &table.jwks_refresh,
            jwks_cooldown: &table.jwks_cooldown,
            jwks_timeout: &table.jwks_timeout,
        }
    }

    /// The names of key-source keys that are set, for refusing them next to `[[auth.issuer]]`.
    fn set_keys(&self) -> Vec<&'static str> {
        let mut set = Vec::new();
        let checks: [(&'static str, bool); 9] = [
            ("audience", self.audience.is_some()),
            ("algorithms", self.algorithms.is_some()),
            ("leeway", self.leeway.is_some()),
            ("secret_env", self.secret_env.is_some()),
            ("jwks_url", self.jwks_url.is_some()),
            ("jwks_file", self.jwks_file.is_some()),
            ("jwks_refresh", self.jwks_refresh.is_some()),
            ("jwks_cooldown", self.jwks_cooldown.is_some()),
            ("jwks_timeout", self.jwks_timeout.is_some()),
        ];
        for (name, is_set) in checks {
            if is_set {
                set.push(name);
            }
        }
        set
    }
}

pub(super) fn validate_auth(
    ctx: &Ctx,
    raw: &Spanned<RawAuth>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<AuthConfig, ConfigError> {
    let auth = raw.get_ref();
    let top_level = IssuerFields {
        issuer: None,
        audience: &auth.audience,
        algorithms: &auth.algorithms,
        leeway: &auth.leeway,
        secret_env: &auth.secret_env,
        jwks_url: &auth.jwks_url,
        jwks_file: &auth.jwks_file,
        jwks_refresh: &auth.jwks_refresh,
        jwks_cooldown: &auth.jwks_cooldown,
        jwks_timeout: &auth.jwks_timeout,
    };
    let issuers = match auth.issuer.as_ref().map(|field| (field, field.get_ref())) {
        Some((field, IssuerField::Tables(tables))) => {
            if let Some(key) = top_level.set_keys().first() {
                return Err(ctx.error(
                    field,
                    &format!("auth.{key}"),
                    "with [[auth.issuer]] tables, key settings belong inside each table",
                ));
            }
            if tables.is_empty() {
                return Err(ctx.error(field, "auth.issuer", "no [[auth.issuer]] tables"));
            }
            let mut issuers: Vec<IssuerConfig> = Vec::new();
            for (index, table) in tables.iter().enumerate() {
                let label = format!("auth.issuer[{index}]");
                let fields = IssuerFields::of_table(table.get_ref());
                let issuer = validate_issuer(ctx, raw, &fields, None, &label, env)?;
                if tables.len() > 1 && issuer.issuer.is_none() {
                    return Err(ctx.error(
                        table,
                        &format!("{label}.issuer"),
                        "with several issuers, each must name its `issuer` (the token's `iss` selects one)",
                    ));
                }
                if let Some(name) = &issuer.issuer {
                    if issuers
                        .iter()
                        .any(|other| other.issuer.as_ref() == Some(name))
                    {
                        return Err(ctx.error(table, &format!("{label}.issuer"), "listed twice"));
                    }
                }
                issuers.push(issuer);
            }
            issuers
        }
        Some((field, IssuerField::Url(url))) => {
            let name = Spanned::new(field.span(), url.clone());
            vec![validate_issuer(
                ctx,
                raw,
                &top_level,
                Some(&name),
                "auth",
                env,
            )?]
        }
        // Session cookies only: no key source at all is configured for bearer tokens.
        None if auth.session.is_some() && top_level.set_keys().is_empty() => Vec::new(),
        None => vec![validate_issuer(ctx, raw, &top_level, None, "auth", env)?],
    };
    let session = match &auth.session {
        None => None,
        Some(session) => Some(validate_session(ctx, session, env)?),
    };
    let user_claim = match &auth.user_claim {
        None => "sub".to_string(),
        Some(claim) if claim.get_ref().is_empty() => {
            return Err(ctx.error(claim, "auth.user_claim", "must not be empty"))
        }
        Some(claim) => claim.get_ref().clone(),
    };
    let identity_header = match &auth.identity_header {
        None => HeaderName::from_static("x-user-id"),
        Some(name) => validate_header_name(ctx, name, "auth.identity_header")?,
    };
    let strip_headers = auth
        .strip_headers
        .iter()
        .flatten()
        .map(|name| validate_header_name(ctx, name, "auth.strip_headers"))
        .collect::<Result<Vec<_>, _>>()?;
    let owner_query_params = validate_query_params(ctx, &auth.owner_query_params, "auth")?
        .unwrap_or_else(|| vec!["user_id".to_string()]);
    let token_cache_size = match &auth.token_cache_size {
        None => DEFAULT_TOKEN_CACHE_SIZE,
        Some(size) if (0..=10_000_000).contains(size.get_ref()) => *size.get_ref() as usize,
        Some(size) => {
            return Err(ctx.error(
                size,
                "auth.token_cache_size",
                "must be between 0 (off) and 10000000",
            ))
        }
    };
    let max_lifetime = validate_duration(
        ctx,
        &auth.max_lifetime,
        "auth.max_lifetime",
        DEFAULT_MAX_LIFETIME,
        false,
    )?;
    Ok(AuthConfig {
        issuers,
        user_claim,
        identity_header,
        strip_headers,
        owner_query_params,
        token_cache_size,
        max_lifetime,
        session,
    })
}

pub(super) fn validate_issuer(
    ctx: &Ctx,
    table: &Spanned<RawAuth>,
    fields: &IssuerFields,
    name_override: Option<&Spanned<String>>,
    label: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<IssuerConfig, ConfigError> {
    let key = |name: &str| format!("{label}.{name}");
    let algorithms = match fields.algorithms {
        None => vec![JwsAlgorithm::HS256],
        Some(list) => {
            if list.get_ref().is_empty() {
                return Err(ctx.error(list, &key("algorithms"), "the algorithm list is empty"));
            }
            let mut algorithms = Vec::new();
            for name in list.get_ref() {
                let algorithm = JwsAlgorithm::from_name(name.get_ref()).ok_or_else(|| {
                    ctx.error(
                        name,
                        &key("algorithms"),
                        format!("unknown or unsupported algorithm `{}`", name.get_ref()),
                    )
                })?;
                if algorithms.contains(&algorithm) {
                    return Err(ctx.error(name, &key("algorithms"), "listed twice"));
                }
                algorithms.push(algorithm);
            }
            algorithms
        }
    };
    let secret = match fields.secret_env {
        None => None,
        Some(var) => {
            let name = var.get_ref();
            match env(name) {
                None => {
                    return Err(ctx.error(
                        var,
                        &key("secret_env"),
                        format!("environment variable {name} is not set"),
                    ))
                }
                Some(value) if value.is_empty() => {
                    return Err(ctx.error(
                        var,
                        &key("secret_env"),
                        format!("environment variable {name} is empty"),
                    ))
                }
                Some(value) => Some(Secret(value.into_bytes())),
            }
        }
    };
    // RFC 7518 §3.2: an HS* key must be at least as long as the hash output. A short or
    // guessable secret lets anyone who can try keys offline mint tokens for any user.
    if let (Some(var), Some(Secret(bytes))) = (fields.secret_env, &secret) {
        let strictest = algorithms
            .iter()
            .filter_map(|algorithm| Some((algorithm.min_hmac_key_bytes()?, algorithm)))
            .max_by_key(|(min_bytes, _)| *min_bytes);
        if let Some((min_bytes, algorithm)) = strictest {
            if bytes.len() < min_bytes {
                return Err(ctx.error(
                    var,
                    &key("secret_env"),
                    format!(
                        "environment variable {} holds a {}-byte secret; {algorithm} needs at \
                         least {min_bytes} bytes (RFC 7518 §3.2). Use the secret Better Auth signs \
                         with, made with e.g. `openssl rand -hex 32`",
                        var.get_ref(),
                        bytes.len()
                    ),
                ));
            }
        }
    }
    let jwks_url = match fields.jwks_url {
        None => None,
        Some(url) => Some(validate_jwks_url(ctx, url, &key("jwks_url"))?),
    };
    let jwks_file = match fields.jwks_file {
        None => None,
        Some(path) => {
            let resolved = ctx.base.join(path.get_ref());
            let json = std::fs::read(&resolved).map_err(|err| {
                ctx.error(
                    path,
                    &key("jwks_file"),
                    format!("cannot read {}: {err}", resolved.display()),
                )
            })?;
            let (set, problems) = crate::core::jose::KeySet::parse(&json).map_err(|why| {
                ctx.error(
                    path,
                    &key("jwks_file"),
                    format!("{}: {why}", resolved.display()),
                )
            })?;
            for problem in problems {
                tracing::warn!("{}: skipped a key: {problem}", resolved.display());
            }
            if set.is_empty() {
                return Err(ctx.error(path, &key("jwks_file"), "the key set has no usable key"));
            }
            Some(JwksFile {
                path: resolved.display().to_string(),
                json,
            })
        }
    };
    let algorithms_span = fields
        .algorithms
        .as_ref()
        .map(|list| list.span())
        .unwrap_or(table.span());
    for algorithm in &algorithms {
        let (needs, missing) = if algorithm.is_hmac() {
            ("`secret_env` naming the shared secret", secret.is_none())
        } else {
            (
                "a public key source (`jwks_url` or `jwks_file`)",
                jwks_url.is_none() && jwks_file.is_none(),
            )
        };
        if missing {
            return Err(ConfigError {
                file: ctx.file.to_string(),
                line: ctx.line_of(algorithms_span.start),
                key: key("algorithms"),
                message: format!("{algorithm} needs {needs}"),
            });
        }
    }
    let non_empty = |value: Option<&Spanned<String>>, name: &str| match value {
        Some(value) if value.get_ref().is_empty() => Err(ctx.error(
            value,
            &key(name),
            "must not be empty; remove the key to disable the check",
        )),
        value => Ok(value.map(|value| value.get_ref().clone())),
    };
    Ok(IssuerConfig {
        issuer: non_empty(name_override.or(fields.issuer), "issuer")?,
        audience: non_empty(fields.audience.as_ref(), "audience")?,
        algorithms,
        leeway: validate_duration(ctx, fields.leeway, &key("leeway"), DEFAULT_LEEWAY, true)?,
        secret,
        jwks_url,
        jwks_file,
        jwks_refresh: validate_duration(
            ctx,
            fields.jwks_refresh,
            &key("jwks_refresh"),
            DEFAULT_JWKS_REFRESH,
            false,
        )?,
        jwks_cooldown: validate_duration(
            ctx,
            fields.jwks_cooldown,
            &key("jwks_cooldown"),
            DEFAULT_JWKS_COOLDOWN,
            false,
        )?,
        jwks_timeout: validate_duration(
            ctx,
            fields.jwks_timeout,
            &key("jwks_timeout"),
            DEFAULT_JWKS_TIMEOUT,
            false,
        )?,
        label: label.to_string(),
    })
}

pub(super) fn validate_jwks_url(
    ctx: &Ctx,
    url: &Spanned<String>,
    key: &str,
) -> Result<Uri, ConfigError> {
    let uri: Uri = url
        .get_ref()
        .parse()
        .map_err(|_| ctx.error(url, key, "not a valid URL"))?;
    // https is verified against the Mozilla roots (webpki-roots); http is for private networks.
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(ctx.error(url, key, "the scheme must be http or https"));
    }
    if uri.authority().is_none() {
        return Err(ctx.error(url, key, "the URL has no host"));
    }
    Ok(uri)
}
