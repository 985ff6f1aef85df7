//! The hyper-rustls connector for upstream clients (hyper's, for WebSocket upgrades, and the JWKS
//! fetcher), over the client configuration of `core::tls`.

use hyper_util::client::legacy::connect::HttpConnector;
use rustls::ClientConfig;

use crate::core::tls::{unused_client_config, UpstreamTls};

/// The connector of the upstream client: plain TCP for `http://`, TLS for `https://` (never
/// falling back to plain for an https upstream).
pub(crate) fn upstream_connector<R>(
    mut http: HttpConnector<R>,
    tls: Option<&UpstreamTls>,
) -> hyper_rustls::HttpsConnector<HttpConnector<R>> {
    // The TLS layer decides the scheme; the TCP connector must accept https URIs.
    http.enforce_http(false);
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    match tls {
        Some(tls) => builder
            .with_tls_config(ClientConfig::clone(&tls.client))
            .https_only()
            .enable_http1()
            .wrap_connector(http),
        None => builder
            .with_tls_config(unused_client_config())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http),
    }
}
