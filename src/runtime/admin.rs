//! The admin listener, off the public port: `/healthz` (the process runs), `/readyz` (the config is
//! loaded and every key source has keys; it reports the shared store's state, and is unready for
//! the store only under `on_error = "deny"`, where a store that does not answer refuses every
//! limited request) and `/metrics` (Prometheus text).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::config::StoreFailurePolicy;
use crate::proxy::store::StoreState;
use crate::runtime::live::Live;

pub async fn serve(listener: TcpListener, live: Arc<Live>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let live = live.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let live = live.clone();
                async move { Ok::<_, Infallible>(answer(&live, request)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(live: &Live, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return json(
            StatusCode::METHOD_NOT_ALLOWED,
            serde_json::json!({"error": "method_not_allowed"}),
        );
    }
    match request.uri().path() {
        "/healthz" => json(StatusCode::OK, serde_json::json!({"status": "ok"})),
        "/readyz" => {
            let gateway = live.gateway();
            let waiting: Vec<String> = gateway
                .jwks_sources()
                .iter()
                .filter(|remote| remote.keys().is_none())
                .map(|remote| remote.url().to_string())
                .collect();
            let store = gateway.store().map(|store| {
                let on_error = store.settings().on_error;
                let state = store.state();
                let refusing = on_error == StoreFailurePolicy::Deny && state != StoreState::Up;
                (
                    serde_json::json!({"state": state.name(), "on_error": on_error.name()}),
                    refusing,
                )
            });
            let store_refusing = store.as_ref().is_some_and(|(_, refusing)| *refusing);
            let mut body = if !waiting.is_empty() {
                serde_json::json!({
                    "status": "not_ready",
                    "reason": "no signing keys fetched yet",
                    "jwks_waiting": waiting,
                })
            } else if store_refusing {
                serde_json::json!({
                    "status": "not_ready",
                    "reason": "the shared store is not answering and on_error is \"deny\"",
                })
            } else {
                serde_json::json!({"status": "ready"})
            };
            if let Some((store, _)) = store {
                body["store"] = store;
            }
            let status = if waiting.is_empty() && !store_refusing {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json(status, body)
        }
        "/metrics" => {
            let mut response = Response::new(Full::new(Bytes::from(live.metrics().render())));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        _ => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "not_found"}),
        ),
    }
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
