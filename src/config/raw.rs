//! The TOML file exactly as written. Nothing here is trusted: `validate` turns it into typed config.
//! Every table denies unknown keys so that a typo (`ownr = "user_id"`) stops start-up instead of
//! silently dropping a protection.

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub server: Option<RawServer>,
    pub upstream: Option<Spanned<RawUpstream>>,
    /// `[upstreams.NAME]` tables, for routes that name one.
    #[serde(default)]
    pub upstreams: std::collections::BTreeMap<String, Spanned<RawUpstream>>,
    pub auth: Spanned<RawAuth>,
    pub rate_limit: Option<Spanned<RawRateLimit>>,
    pub limits: Option<Spanned<RawLimits>>,
    pub admin: Option<Spanned<RawAdmin>>,
    pub log: Option<Spanned<RawLog>>,
    pub cors: Option<Spanned<RawCors>>,
    pub store: Option<Spanned<RawStore>>,
    #[serde(default, rename = "route")]
    pub routes: Vec<Spanned<RawRoute>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub listen: Option<Spanned<String>>,
    pub workers: Option<Spanned<i64>>,
    pub pin_workers: Option<Spanned<bool>>,
    pub trusted_proxies: Option<Vec<Spanned<String>>>,
    // TLS (src/config/tls.rs)
    pub redirect_http: Option<Spanned<String>>,
    pub tls: Option<Spanned<RawServerTls>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub listen: Spanned<String>,
    pub token_env: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCors {
    pub allow_origins: Spanned<Vec<Spanned<String>>>,
    pub allow_headers: Option<Vec<Spanned<String>>>,
    pub expose_headers: Option<Vec<Spanned<String>>>,
    pub max_age: Option<Spanned<String>>,
    pub allow_credentials: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStore {
    pub redis_url: Spanned<String>,
    pub password_env: Option<Spanned<String>>,
    pub op_timeout: Option<Spanned<String>>,
    pub on_error: Option<Spanned<String>>,
    pub key_prefix: Option<Spanned<String>>,
    pub breaker_failures: Option<Spanned<i64>>,
    pub breaker_open: Option<Spanned<String>>,
    pub ca_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLog {
    pub format: Option<Spanned<String>>,
    pub access: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub header_read_timeout: Option<Spanned<String>>,
    pub idle_timeout: Option<Spanned<String>>,
    pub request_timeout: Option<Spanned<String>>,
    pub shutdown_grace: Option<Spanned<String>>,
    pub max_header_bytes: Option<Spanned<i64>>,
    pub max_body_bytes: Option<Spanned<i64>>,
    pub max_connections: Option<Spanned<i64>>,
    pub max_concurrent_streams: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRateLimit {
    pub per_user: Option<Spanned<String>>,
    pub burst: Option<Spanned<i64>>,
    pub per_ip: Option<Spanned<String>>,
    pub per_ip_burst: Option<Spanned<i64>>,
    pub auth_failures: Option<Spanned<String>>,
    pub auth_failures_burst: Option<Spanned<i64>>,
    pub rate_limit_headers: Option<bool>,
    pub cleanup_interval: Option<Spanned<String>>,
}

/// A route's `rate_limit = { ... }` override.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRouteRateLimit {
    pub per_user: Option<Spanned<String>>,
    pub burst: Option<Spanned<i64>>,
    pub per_ip: Option<Spanned<String>>,
    pub per_ip_burst: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstream {
    pub url: Spanned<String>,
    pub timeout: Option<Spanned<String>>,
    pub connect_timeout: Option<Spanned<String>>,
    // TLS to the backend (src/config/tls.rs)
    pub ca_file: Option<Spanned<String>>,
    pub client_cert: Option<Spanned<String>>,
    pub client_key: Option<Spanned<String>>,
    pub insecure_skip_verify: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuth {
    /// Either the issuer URL of the single-issuer form, or `[[auth.issuer]]` tables.
    pub issuer: Option<Spanned<IssuerField>>,
    pub audience: Option<Spanned<String>>,
    pub algorithms: Option<Spanned<Vec<Spanned<String>>>>,
    pub leeway: Option<Spanned<String>>,
    pub secret_env: Option<Spanned<String>>,
    pub jwks_url: Option<Spanned<String>>,
    pub jwks_file: Option<Spanned<String>>,
    pub jwks_refresh: Option<Spanned<String>>,
    pub jwks_cooldown: Option<Spanned<String>>,
    pub jwks_timeout: Option<Spanned<String>>,
    pub user_claim: Option<Spanned<String>>,
    pub identity_header: Option<Spanned<String>>,
    pub strip_headers: Option<Vec<Spanned<String>>>,
    pub owner_query_params: Option<Vec<Spanned<String>>>,
    pub token_cache_size: Option<Spanned<i64>>,
    pub max_lifetime: Option<Spanned<String>>,
    pub session: Option<Spanned<RawSession>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSession {
    pub base_url: Spanned<String>,
    pub cookie_prefix: Option<Spanned<String>>,
    pub secret_env: Option<Spanned<String>>,
    pub cache_ttl: Option<Spanned<String>>,
    pub cache_size: Option<Spanned<i64>>,
    pub timeout: Option<Spanned<String>>,
}

/// One `[[auth.issuer]]` table: the same key-source keys as the single-issuer `[auth]` form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIssuer {
    pub issuer: Option<Spanned<String>>,
    pub audience: Option<Spanned<String>>,
    pub algorithms: Option<Spanned<Vec<Spanned<String>>>>,
    pub leeway: Option<Spanned<String>>,
    pub secret_env: Option<Spanned<String>>,
    pub jwks_url: Option<Spanned<String>>,
    pub jwks_file: Option<Spanned<String>>,
    pub jwks_refresh: Option<Spanned<String>>,
    pub jwks_cooldown: Option<Spanned<String>>,
    pub jwks_timeout: Option<Spanned<String>>,
}

#[derive(Debug)]
pub(crate) enum IssuerField {
    Url(String),
    Tables(Vec<Spanned<RawIssuer>>),
}

/// Hand-written so that the tables are read by the TOML deserializer itself: their keys keep their
/// spans (for line numbers) and unknown keys are still refused.
impl<'de> serde::Deserialize<'de> for IssuerField {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl<'de> serde::de::Visitor<'de> for FieldVisitor {
            type Value = IssuerField;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an issuer URL string, or [[auth.issuer]] tables")
            }
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<IssuerField, E> {
                Ok(IssuerField::Url(value.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<IssuerField, A::Error> {
                let mut tables = Vec::new();
                while let Some(table) = seq.next_element()? {
                    tables.push(table);
                }
                Ok(IssuerField::Tables(tables))
            }
        }
        deserializer.deserialize_any(FieldVisitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub path: Spanned<String>,
    pub methods: Option<Spanned<Vec<Spanned<String>>>>,
    pub auth: Option<Spanned<String>>,
    pub owner: Option<Spanned<String>>,
    pub owner_query_params: Option<Vec<Spanned<String>>>,
    pub rate_limit: Option<Spanned<RawRouteRateLimit>>,
    pub require: Option<Spanned<toml::Table>>,
    pub owner_bypass: Option<Spanned<toml::Table>>,
    pub body_owner_fields: Option<Vec<Spanned<String>>>,
    pub max_body_owner_bytes: Option<Spanned<i64>>,
    pub claim_headers: Option<Spanned<toml::Table>>,
    pub upstream: Option<Spanned<String>>,
    pub strip_prefix: Option<Spanned<String>>,
    pub websocket: Option<bool>,
    pub websocket_idle: Option<Spanned<String>>,
    pub websocket_max_lifetime: Option<Spanned<String>>,
    pub websocket_close_on_expiry: Option<bool>,
    pub stream_timeout: Option<Spanned<String>>,
    pub allow_method_override: Option<bool>,
    pub auth_methods: Option<Spanned<Vec<Spanned<String>>>>,
    pub forward_session_cookie: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServerTls {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
    pub hsts: Option<Spanned<String>>,
    #[serde(default)]
    pub sni: Vec<Spanned<RawSni>>,
}

/// One `[[server.tls.sni]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSni {
    pub name: Spanned<String>,
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}
