//! The small HTTP client the gateway uses for its own calls (JWKS documents, Better Auth
//! sessions): https verified against the Mozilla roots (webpki-roots), never skipped; a connect
//! timeout; bodies read up to a limit.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub(crate) type FetchClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// A client for `url`'s scheme: plain for http, TLS against the public roots for https.
pub(crate) fn client(url: &Uri, connect_timeout: Duration) -> Result<FetchClient, String> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    let tls = match url.scheme_str() {
        Some("https") => Some(crate::core::tls::UpstreamTls {
            client: Arc::new(
                crate::core::tls::upstream_client_config(
                    &crate::core::tls::UpstreamTrust::WebPkiRoots,
                    None,
                )
                .map_err(|err| format!("TLS setup failed: {err}"))?,
            ),
            insecure: false,
        }),
        _ => None,
    };
    let connector = crate::proxy::upstream::tls::upstream_connector(connector, tls.as_ref());
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// The whole body, or why not: larger than `max` bytes, or cut short.
pub(crate) async fn body_up_to(body: Incoming, max: usize) -> Result<Bytes, String> {
    Limited::new(body, max)
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .map_err(|err| {
            if err.is::<http_body_util::LengthLimitError>() {
                format!("larger than {max} bytes")
            } else {
                format!("body failed: {err}")
            }
        })
}

/// The media type of a `Content-Type` value, lower-cased, without parameters.
pub(crate) fn media_type(headers: &http::HeaderMap) -> String {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}
