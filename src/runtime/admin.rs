//! The admin listener, off the public port: `/healthz` (the process runs), `/readyz` (the config is
//! loaded and every key source has keys; it reports the shared store's state, and is unready for
//! the store only under `on_error = "deny"`, where a store that does not answer refuses every
//! limited request), `/metrics` (Prometheus text), and `POST /revoke` (sign-out that takes effect
//! for tokens still within their `exp`; src/request/revocation.rs).
//!
//! `/revoke` changes what the gateway lets through, so it is guarded: with `[admin] token_env` it
//! needs `Authorization: Bearer <token>`; without it, only a peer on loopback may call it.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::config::StoreFailurePolicy;
use crate::proxy::store::StoreState;
use crate::request::revocation::Revocation;
use crate::runtime::live::Live;

pub async fn serve(listener: TcpListener, live: Arc<Live>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let (stream, peer) = stream;
        let live = live.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let live = live.clone();
                async move { Ok::<_, Infallible>(answer(&live, request, peer).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    live: &Live,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    if request.uri().path() == "/revoke" {
        return revoke(live, request, peer).await;
    }
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
            let unresolved = gateway.start_resolving_upstreams();
            let mut body = if !waiting.is_empty() {
                serde_json::json!({
                    "status": "not_ready",
                    "reason": "no signing keys fetched yet",
                    "jwks_waiting": waiting,
                })
            } else if !unresolved.is_empty() {
                serde_json::json!({
                    "status": "not_ready",
                    "reason": "the upstream's host name has no address yet (DNS lookup failed or pending)",
                    "upstreams_unresolved": unresolved,
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
            let status = if waiting.is_empty() && unresolved.is_empty() && !store_refusing {
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

/// The largest `/revoke` body read.
const MAX_REVOKE_BODY: usize = 4096;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    sub: Option<String>,
    before: Option<u64>,
    sid: Option<String>,
}

/// `POST /revoke` with `{"sub": "...", "before": <unix seconds>}` (before defaults to now) or
/// `{"sid": "..."}`. Answers 200 with what was recorded and until when.
async fn revoke(
    live: &Live,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let refuse = |status: StatusCode, error: &str, message: &str| {
        json(
            status,
            serde_json::json!({"error": error, "message": message}),
        )
    };
    if request.method() != Method::POST {
        let mut response = refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "POST only",
        );
        response
            .headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let gateway = live.gateway();
    match gateway.admin_token() {
        Some(token) => {
            let presented = request
                .headers()
                .get(AUTHORIZATION)
                .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "));
            if !presented.is_some_and(|presented| same_bytes(presented, &token.0)) {
                let mut response = refuse(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "POST /revoke needs Authorization: Bearer <the [admin] token_env token>",
                );
                response.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"authgate-admin\""),
                );
                return response;
            }
        }
        None if !peer.ip().is_loopback() => {
            return refuse(
                StatusCode::FORBIDDEN,
                "forbidden",
                "POST /revoke from off this host needs [admin] token_env",
            )
        }
        None => {}
    }
    let body = match Limited::new(request.into_body(), MAX_REVOKE_BODY)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the body is larger than 4 KiB",
            )
        }
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let revocation = match serde_json::from_slice::<RevokeRequest>(&body) {
        Ok(RevokeRequest {
            sub: Some(sub),
            before,
            sid: None,
        }) => Revocation::Subject {
            sub,
            before: before.unwrap_or(now),
        },
        Ok(RevokeRequest {
            sub: None,
            before: None,
            sid: Some(sid),
        }) => Revocation::Session { sid },
        Ok(_) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "expected {\"sub\": \"...\", \"before\": <unix seconds>} or {\"sid\": \"...\"}",
            )
        }
        Err(err) => {
            return json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": "bad_request", "message": format!("not a revocation: {err}")}),
            )
        }
    };
    if !revocation.id_is_valid() {
        return refuse(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "ids are 1 to 256 visible ASCII characters",
        );
    }
    let expires_at = revocation.expires_at(now, gateway.max_token_lifetime().as_secs());
    if let Err(why) = gateway.revocations().add(&revocation, expires_at, now) {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "too_many_revocations", why);
    }
    gateway
        .metrics()
        .revocations
        .get_or_create(&crate::core::metrics::ResultLabels { result: "admin" })
        .inc();
    let shared = match gateway.store() {
        Some(store) => match store.publish_revocation(&revocation, expires_at).await {
            Ok(()) => "shared",
            Err(why) => {
                tracing::warn!(error = %why, "a revocation could not be shared through the store; it holds on this replica");
                "this_replica_only"
            }
        },
        None => "this_replica",
    };
    tracing::info!(revocation = %revocation.encode().replace('\t', " "), expires_at, shared, "revoked");
    let mut body = match &revocation {
        Revocation::Subject { sub, before } => serde_json::json!({"sub": sub, "before": before}),
        Revocation::Session { sid } => serde_json::json!({"sid": sid}),
    };
    body["expires_at"] = expires_at.into();
    body["scope"] = shared.into();
    json(StatusCode::OK, body)
}

/// Byte comparison whose time does not depend on where the bytes differ.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
