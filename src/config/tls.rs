//! The TLS keys: `[server.tls]` (with `[[server.tls.sni]]`), `server.redirect_http`, and
//! `ca_file`, `client_cert`, `client_key`, `insecure_skip_verify` in `[upstream]`. Their raw
//! tables and their validation live here so that TLS touches the rest of the config code only
//! where it plugs in. Certificate files are read and checked at load, so `authgate check`
//! reports a missing file, a missing key or a key that does not match with file, line and key.

use std::net::SocketAddr;
use std::path::PathBuf;

use http::header::HeaderValue;
use http::uri::Scheme;
use rustls::pki_types::DnsName;
use toml::Spanned;

use super::raw::{RawServerTls, RawUpstream};
use super::{ConfigError, Ctx};
use crate::core::tls::{CertSource, LoadedCert, ServerTlsConfig, UpstreamTls, UpstreamTrust};

/// `[server.tls]` as written.
/// Loads a certificate chain and its key; errors are reported at `cert_key` or `key_key`.
fn load_pair(
    ctx: &Ctx,
    cert: &Spanned<String>,
    key: &Spanned<String>,
    cert_key: &str,
    key_key: &str,
) -> Result<(PathBuf, PathBuf, LoadedCert), ConfigError> {
    let cert_path = ctx.base.join(cert.get_ref());
    let key_path = ctx.base.join(key.get_ref());
    // The chain alone first, so that its problems are reported at `cert`, the key's at `key`.
    crate::core::tls::load_certs(&cert_path).map_err(|why| ctx.error(cert, cert_key, why))?;
    let loaded = crate::core::tls::load_cert_pair(&cert_path, &key_path)
        .map_err(|why| ctx.error(key, key_key, why))?;
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    Ok((cert_path, key_path, loaded))
}

pub(super) fn validate_server_tls(
    ctx: &Ctx,
    raw: Option<&Spanned<RawServerTls>>,
) -> Result<Option<ServerTlsConfig>, ConfigError> {
    let Some(raw) = raw.map(Spanned::get_ref) else {
        return Ok(None);
    };
    let (cert, key, loaded) = load_pair(
        ctx,
        &raw.cert,
        &raw.key,
        "server.tls.cert",
        "server.tls.key",
    )?;
    let default = CertSource {
        name: None,
        cert,
        key,
        loaded,
    };
    let mut sni: Vec<CertSource> = Vec::new();
    for (index, table) in raw.sni.iter().enumerate() {
        let label = format!("server.tls.sni[{index}]");
        let table = table.get_ref();
        let name = table
            .name
            .get_ref()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let bare = name.strip_prefix("*.").unwrap_or(&name);
        if DnsName::try_from(bare).is_err() || bare.contains('*') {
            return Err(ctx.error(
                &table.name,
                &format!("{label}.name"),
                format!(
                    "`{}` is not a DNS name (write `api.example.com`, or `*.example.com` for one label)",
                    table.name.get_ref()
                ),
            ));
        }
        if sni.iter().any(|other| other.name.as_deref() == Some(&name)) {
            return Err(ctx.error(&table.name, &format!("{label}.name"), "listed twice"));
        }
        let (cert, key, loaded) = load_pair(
            ctx,
            &table.cert,
            &table.key,
            &format!("{label}.cert"),
            &format!("{label}.key"),
        )?;
        sni.push(CertSource {
            name: Some(name),
            cert,
            key,
            loaded,
        });
    }
    let hsts = match &raw.hsts {
        None => None,
        Some(value) => Some(validate_hsts(ctx, value)?),
    };
    Ok(Some(ServerTlsConfig { default, sni, hsts }))
}

/// `Strict-Transport-Security` must carry `max-age` (RFC 6797 section 6.1.1).
fn validate_hsts(ctx: &Ctx, value: &Spanned<String>) -> Result<HeaderValue, ConfigError> {
    let text = value.get_ref();
    let has_max_age = text.split(';').any(|directive| {
        let directive = directive.trim();
        directive.len() > 8
            && directive[..8].eq_ignore_ascii_case("max-age=")
            && directive[8..]
                .trim_matches('"')
                .bytes()
                .all(|b| b.is_ascii_digit())
    });
    if !has_max_age {
        return Err(ctx.error(
            value,
            "server.tls.hsts",
            "expected a Strict-Transport-Security value with max-age, e.g. \"max-age=63072000; includeSubDomains\"",
        ));
    }
    HeaderValue::from_str(text)
        .map_err(|_| ctx.error(value, "server.tls.hsts", "not a valid header value"))
}

pub(super) fn validate_redirect(
    ctx: &Ctx,
    raw: Option<&Spanned<String>>,
    listen: SocketAddr,
    tls: bool,
) -> Result<Option<SocketAddr>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let address: SocketAddr = raw.get_ref().parse().map_err(|_| {
        ctx.error(
            raw,
            "server.redirect_http",
            "expected a socket address such as \"0.0.0.0:80\"",
        )
    })?;
    if !tls {
        return Err(ctx.error(
            raw,
            "server.redirect_http",
            "redirects go to HTTPS, which needs [server.tls]",
        ));
    }
    if address == listen {
        return Err(ctx.error(
            raw,
            "server.redirect_http",
            "must differ from server.listen",
        ));
    }
    Ok(Some(address))
}

/// `table` is where the keys sit (`upstream`), for error locations.
pub(super) fn validate_upstream_tls(
    ctx: &Ctx,
    raw: &RawUpstream,
    scheme: &Scheme,
    authority: &str,
    table: &str,
) -> Result<Option<UpstreamTls>, ConfigError> {
    let key = |name: &str| format!("{table}.{name}");
    let insecure = raw.insecure_skip_verify.as_ref().filter(|v| *v.get_ref());
    if *scheme != Scheme::HTTPS {
        let set = [
            raw.ca_file.as_ref().map(|v| (v.span(), "ca_file")),
            raw.client_cert.as_ref().map(|v| (v.span(), "client_cert")),
            raw.client_key.as_ref().map(|v| (v.span(), "client_key")),
            insecure.map(|v| (v.span(), "insecure_skip_verify")),
        ];
        if let Some((span, name)) = set.into_iter().flatten().next() {
            return Err(ctx.error(
                &Spanned::new(span, ()),
                &key(name),
                "applies only to an https url",
            ));
        }
        return Ok(None);
    }
    let trust = match (&raw.ca_file, insecure) {
        (Some(ca_file), Some(_)) => {
            return Err(ctx.error(
                ca_file,
                &key("ca_file"),
                "insecure_skip_verify = true would ignore it; choose one",
            ))
        }
        (Some(ca_file), None) => UpstreamTrust::CaFile(ctx.base.join(ca_file.get_ref())),
        (None, Some(_)) => UpstreamTrust::Insecure,
        (None, None) => UpstreamTrust::WebPkiRoots,
    };
    let identity = match (&raw.client_cert, &raw.client_key) {
        (None, None) => None,
        (Some(cert), Some(private_key)) => Some(
            load_pair(
                ctx,
                cert,
                private_key,
                &key("client_cert"),
                &key("client_key"),
            )?
            .2,
        ),
        (Some(cert), None) => {
            return Err(ctx.error(cert, &key("client_cert"), "needs `client_key` as well"))
        }
        (None, Some(private_key)) => {
            return Err(ctx.error(
                private_key,
                &key("client_key"),
                "needs `client_cert` as well",
            ))
        }
    };
    let client = crate::core::tls::upstream_client_config(&trust, identity).map_err(|why| {
        match &raw.ca_file {
            Some(ca_file) => ctx.error(ca_file, &key("ca_file"), why),
            None => ctx.error(&raw.url, &key("url"), why),
        }
    })?;
    let insecure = matches!(trust, UpstreamTrust::Insecure);
    if insecure {
        tracing::warn!(
            upstream = authority,
            "upstream.insecure_skip_verify = true: the backend's TLS certificate is NOT verified; \
             anyone who can intercept traffic to the backend can impersonate it and read every \
             request, tokens and user ids included"
        );
    }
    Ok(Some(UpstreamTls {
        client: std::sync::Arc::new(client),
        insecure,
    }))
}
