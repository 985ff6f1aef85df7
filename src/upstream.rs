//! Forwarding to the backend over a pooled keep-alive client. Bodies stream in both directions;
//! nothing is buffered here.

use std::time::Duration;

use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::UpstreamConfig;
use crate::error::GatewayError;

pub struct Upstream {
    client: Client<HttpConnector, Incoming>,
    scheme: Scheme,
    authority: Authority,
    timeout: Duration,
}

impl Upstream {
    pub fn new(config: &UpstreamConfig) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(1024)
            .build(connector);
        Upstream {
            client,
            scheme: config.scheme.clone(),
            authority: config.authority.clone(),
            timeout: config.timeout,
        }
    }

    /// Sends the request to the backend with the original path and query bytes, and returns the
    /// response head as soon as it arrives (its body streams). Refused or reset: 502. No response
    /// head within the timeout: 504.
    pub async fn forward(
        &self,
        mut parts: Parts,
        body: Incoming,
    ) -> Result<Response<Incoming>, GatewayError> {
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(self.scheme.clone());
        uri.authority = Some(self.authority.clone());
        uri.path_and_query = Some(path_and_query);
        parts.uri =
            Uri::from_parts(uri).map_err(|_| GatewayError::BadTarget("unforwardable target"))?;
        // The backend speaks HTTP/1.1 whatever the client spoke to us.
        parts.version = Version::HTTP_11;
        let request = Request::from_parts(parts, body);
        match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(err)) => {
                tracing::warn!(error = %err, source = ?std::error::Error::source(&err), "upstream request failed");
                Err(GatewayError::UpstreamUnavailable)
            }
            Err(_) => {
                tracing::warn!(timeout = ?self.timeout, "upstream timed out");
                Err(GatewayError::UpstreamTimeout)
            }
        }
    }
}
