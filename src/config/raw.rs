//! The TOML file exactly as written. Nothing here is trusted: `validate` turns it into typed config.
//! Every table denies unknown keys so that a typo (`ownr = "user_id"`) stops start-up instead of
//! silently dropping a protection.

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub server: Option<RawServer>,
    pub upstream: Spanned<RawUpstream>,
    pub auth: Spanned<RawAuth>,
    #[serde(default, rename = "route")]
    pub routes: Vec<Spanned<RawRoute>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<Spanned<String>>,
    pub workers: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub url: Spanned<String>,
    pub timeout: Option<Spanned<String>>,
    pub connect_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub algorithms: Option<Spanned<Vec<Spanned<String>>>>,
    pub secret_env: Option<Spanned<String>>,
    pub user_claim: Option<Spanned<String>>,
    pub identity_header: Option<Spanned<String>>,
    pub leeway: Option<Spanned<String>>,
    pub issuer: Option<Spanned<String>>,
    pub audience: Option<Spanned<String>>,
    pub strip_headers: Option<Vec<Spanned<String>>>,
    pub owner_query_params: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub path: Spanned<String>,
    pub methods: Option<Spanned<Vec<Spanned<String>>>>,
    pub auth: Option<Spanned<String>>,
    pub owner: Option<Spanned<String>>,
    pub owner_query_params: Option<Vec<Spanned<String>>>,
}
