//! The plain-HTTP listener (`server.redirect_http`) that answers every request with a 308 to the
//! same host, path and query over HTTPS.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, HOST, LOCATION};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::LimitsConfig;
use crate::core::error::GatewayError;
use crate::core::io::IdleTimeout;

/// The `308 Permanent Redirect` a plain-HTTP request gets: same host, the HTTPS port (omitted when
/// 443), same path and query. Nothing is forwarded. A missing or malformed `Host` gets 400: the
/// Location is built only from a host that parses as an authority without user info.
pub(crate) fn redirect_response<B>(request: &Request<B>, https_port: u16) -> Response<Full<Bytes>> {
    let host = request
        .headers()
        .get(HOST)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
        .or_else(|| request.uri().authority().map(|a| a.as_str().to_string()));
    let authority = host.and_then(|host| host.parse::<http::uri::Authority>().ok());
    let no_host = || GatewayError::BadRequest("a valid Host header is required").into_response();
    let Some(authority) = authority.filter(|a| !a.as_str().contains('@')) else {
        return no_host();
    };
    let host = authority.host();
    // An IPv6 literal keeps its brackets in `host()`.
    let mut location = format!("https://{host}");
    if https_port != 443 {
        location.push_str(&format!(":{https_port}"));
    }
    match request.uri().path_and_query() {
        Some(path) if path.as_str().starts_with('/') => location.push_str(path.as_str()),
        _ => location.push('/'),
    }
    let Ok(location) = HeaderValue::from_str(&location) else {
        return no_host();
    };
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    response.headers_mut().insert(LOCATION, location);
    response
}

/// The plain-HTTP listener of `server.redirect_http`: every request gets a 308 to the same host
/// and path on HTTPS port `https_port` (`redirect_response`). Nothing is forwarded. Same
/// connection limits as the gateway listener; on shutdown, open connections get
/// `shutdown_grace` to finish.
pub async fn serve_redirect(
    listener: TcpListener,
    limits: LimitsConfig,
    https_port: u16,
    shutdown: impl Future<Output = ()>,
) {
    let builder = Arc::new(crate::runtime::server::connection_builder(&limits));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed (redirect listener)");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let io = TokioIo::new(IdleTimeout::new(stream, limits.idle_timeout));
        let connection = builder.serve_connection(
            io,
            service_fn(move |request| async move {
                Ok::<_, Infallible>(redirect_response(&request, https_port))
            }),
        );
        let watched = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            let _slot = slot;
            let _ = watched.await;
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(limits.shutdown_grace, graceful.shutdown()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect(host: Option<&str>, target: &str, port: u16) -> (u16, Option<String>) {
        let mut request = Request::builder().uri(target);
        if let Some(host) = host {
            request = request.header(HOST, host);
        }
        let response = redirect_response(&request.body(()).unwrap_or_default(), port);
        (
            response.status().as_u16(),
            response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(String::from),
        )
    }

    #[test]
    fn redirects_keep_host_path_and_query_and_replace_the_port() {
        let location = |host, target, port| redirect(Some(host), target, port).1;
        assert_eq!(
            location("api.example.com", "/a/b?c=d", 443).as_deref(),
            Some("https://api.example.com/a/b?c=d")
        );
        assert_eq!(
            location("api.example.com:8080", "/", 8443).as_deref(),
            Some("https://api.example.com:8443/")
        );
        assert_eq!(
            location("[::1]:80", "/x", 443).as_deref(),
            Some("https://[::1]/x")
        );
        assert_eq!(redirect(Some("a@evil.test"), "/", 443).0, 400);
        assert_eq!(redirect(Some("bad host"), "/", 443).0, 400);
        assert_eq!(redirect(None, "/", 443).0, 400);
        // An absolute-form target carries its own authority; Host still wins when present.
        assert_eq!(
            redirect(None, "http://site.test/p", 443).1.as_deref(),
            Some("https://site.test/p")
        );
    }
}
