//! `[upstream]` and `[upstreams.NAME]`: where requests go, timeouts, TLS to the backend.

use http::uri::{Authority, Scheme};
use http::Uri;
use raw::RawUpstream;
use std::time::Duration;
use toml::Spanned;

use super::*;

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub scheme: Scheme,
    pub authority: Authority,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Set for an https upstream (see src/runtime/tls.rs).
    pub tls: Option<crate::core::tls::UpstreamTls>,
}

pub(super) const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) fn validate_upstream(
    ctx: &Ctx,
    raw: &Spanned<RawUpstream>,
    table: &str,
) -> Result<UpstreamConfig, ConfigError> {
    let upstream = raw.get_ref();
    let url = &upstream.url;
    let url_key = format!("{table}.url");
    let uri: Uri = url
        .get_ref()
        .parse()
        .map_err(|_| ctx.error(url, &url_key, "not a valid URL"))?;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::HTTP,
        Some("https") => Scheme::HTTPS,
        _ => return Err(ctx.error(url, &url_key, "the scheme must be http or https")),
    };
    let Some(authority) = uri.authority().cloned() else {
        return Err(ctx.error(url, &url_key, "the URL has no host"));
    };
    if authority.as_str().contains('@') {
        return Err(ctx.error(url, &url_key, "credentials in the URL are not supported"));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(ctx.error(
            url,
            &url_key,
            "the URL must not have a path or query; the request path is forwarded as received",
        ));
    }
    let tls = tls::validate_upstream_tls(ctx, upstream, &scheme, authority.as_str(), table)?;
    Ok(UpstreamConfig {
        scheme,
        authority,
        tls,
        timeout: validate_duration(
            ctx,
            &upstream.timeout,
            &format!("{table}.timeout"),
            DEFAULT_UPSTREAM_TIMEOUT,
            false,
        )?,
        connect_timeout: validate_duration(
            ctx,
            &upstream.connect_timeout,
            &format!("{table}.connect_timeout"),
            DEFAULT_CONNECT_TIMEOUT,
            false,
        )?,
    })
}
