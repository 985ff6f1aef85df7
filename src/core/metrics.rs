//! Prometheus metrics (prometheus-client), shared by every config generation: a reload swaps the
//! gateway, not the counters.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route pattern, or `none` when no route matched.
    pub route: &'static str,
    pub method: &'static str,
    /// `2xx`, `4xx`, ...
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JwksLabels {
    pub url: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub policy: &'static str,
}

/// A TLS certificate: `default`, or the SNI name of its `[[server.tls.sni]]` table.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    pub certificate: String,
}

/// Per-thread `authgate_requests_total` handles kept at most (routes x methods x status classes in
/// use); past it the cache starts over.
const MAX_CACHED_REQUEST_COUNTERS: usize = 256;

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    /// `requests` handles, per thread: the family's own lookup hashes the three labels (SipHash)
    /// and takes its lock on every request.
    request_counters: thread_local::ThreadLocal<RefCell<Vec<(RequestLabels, Counter)>>>,
    pub refusals: Family<ReasonLabels, Counter>,
    pub request_duration: Histogram,
    pub upstream_duration: Histogram,
    pub upstream_errors: Family<ReasonLabels, Counter>,
    // The backend's name (src/proxy/upstream/dns.rs)
    pub upstream_dns_lookups: Family<ResultLabels, Counter>,
    pub upstream_dns_stale: Counter,
    pub jwks_fetches: Family<JwksLabels, Counter>,
    pub open_connections: Gauge,
    /// HTTP/1.1 keep-alive connections parked without buffers (src/runtime/keepalive.rs).
    pub parked_connections: Gauge,
    pub config_reloads: Family<OutcomeLabels, Counter>,
    // TLS (src/runtime/tls.rs)
    pub tls_certificate_expiry: Family<CertificateLabels, Gauge>,
    pub tls_certificate_reloads: Family<OutcomeLabels, Counter>,
    pub tls_handshake_failures: Family<ReasonLabels, Counter>,
    // The shared store (src/proxy/store.rs, src/request/ratelimit.rs)
    pub store_operations: Family<ResultLabels, Counter>,
    pub store_duration: Histogram,
    pub store_fallbacks: Family<PolicyLabels, Counter>,
    pub store_local_refusals: Counter,
    pub store_up: Gauge,
    // Better Auth sessions (src/proxy/session.rs)
    pub session_lookups: Family<ResultLabels, Counter>,
    pub session_cache_hits: Counter,
    // Revocations (src/request/revocation.rs, src/proxy/revocation_sync.rs)
    pub revocations: Family<ResultLabels, Counter>,
    pub revocations_subscribed: Gauge,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~13 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("authgate");
        let requests = Family::<RequestLabels, Counter>::default();
        let refusals = Family::<ReasonLabels, Counter>::default();
        let request_duration = latency_histogram();
        let upstream_duration = latency_histogram();
        let upstream_errors = Family::<ReasonLabels, Counter>::default();
        let upstream_dns_lookups = Family::<ResultLabels, Counter>::default();
        let upstream_dns_stale = Counter::default();
        let jwks_fetches = Family::<JwksLabels, Counter>::default();
        let open_connections = Gauge::default();
        let parked_connections = Gauge::default();
        let config_reloads = Family::<OutcomeLabels, Counter>::default();
        let tls_certificate_expiry = Family::<CertificateLabels, Gauge>::default();
        let tls_certificate_reloads = Family::<OutcomeLabels, Counter>::default();
        let tls_handshake_failures = Family::<ReasonLabels, Counter>::default();
        let store_operations = Family::<ResultLabels, Counter>::default();
        // 50 µs .. ~1.6 s: a store operation is bounded by `op_timeout` (at most 5 s).
        let store_duration = Histogram::new(exponential_buckets(0.00005, 2.0, 16));
        let store_fallbacks = Family::<PolicyLabels, Counter>::default();
        let store_local_refusals = Counter::default();
        let store_up = Gauge::default();
        let session_lookups = Family::<ResultLabels, Counter>::default();
        let session_cache_hits = Counter::default();
        let revocations = Family::<ResultLabels, Counter>::default();
        let revocations_subscribed = Gauge::default();
        registry.register(
            "session_lookups",
            "Calls to Better Auth's get-session, by result: valid, ended (signed out or expired), \
             unavailable (down, slow, or an unreadable answer)",
            session_lookups.clone(),
        );
        registry.register(
            "session_cache_hits",
            "Session-cookie requests answered from the session cache, without a call",
            session_cache_hits.clone(),
        );
        registry.register(
            "revocations",
            "Revocations by source: admin (POST /revoke here), learned from another replica \
             through the store by message (pubsub) or by reading the whole set (resync), and \
             refused requests (refused)",
            revocations.clone(),
        );
        registry.register(
            "access_log_dropped_lines",
            "JSON access-log lines dropped because the log reader fell behind (requests are never held)",
            crate::core::access_log::DROPPED_LINES.clone(),
        );
        registry.register(
            "revocations_subscribed",
            "1 while this replica holds its subscription to the store's revocations channel",
            revocations_subscribed.clone(),
        );
        registry.register(
            "requests",
            "Requests answered, by route, method and status class",
            requests.clone(),
        );
        registry.register(
            "refusals",
            "Requests the gateway refused itself, by reason",
            refusals.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request head to response head, through the gateway",
            request_duration.clone(),
        );
        registry.register(
            "upstream_duration_seconds",
            "Time from sending to the upstream to its response head",
            upstream_duration.clone(),
        );
        registry.register(
            "upstream_errors",
            "Upstream failures, by kind",
            upstream_errors.clone(),
        );
        registry.register(
            "upstream_dns_lookups",
            "Lookups of the upstream's host name, by result (ok, failed)",
            upstream_dns_lookups.clone(),
        );
        registry.register(
            "upstream_dns_stale",
            "New upstream connections made to the last known addresses because a lookup failed \
             or was late",
            upstream_dns_stale.clone(),
        );
        registry.register(
            "jwks_fetches",
            "JWKS fetch attempts, by URL and outcome",
            jwks_fetches.clone(),
        );
        registry.register(
            "open_connections",
            "Client connections open now",
            open_connections.clone(),
        );
        registry.register(
            "parked_connections",
            "Open HTTP/1.1 keep-alive connections waiting for their next request, holding no buffers",
            parked_connections.clone(),
        );
        registry.register(
            "config_reloads",
            "Config reload attempts, by outcome",
            config_reloads.clone(),
        );
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "notAfter of each served TLS certificate, as a Unix time",
            tls_certificate_expiry.clone(),
        );
        registry.register(
            "tls_certificate_reloads",
            "TLS certificate reloads, by outcome (refused keeps the previous certificate)",
            tls_certificate_reloads.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out, by reason",
            tls_handshake_failures.clone(),
        );
        registry.register(
            "store_operations",
            "Shared-store (Redis) operations, by result: allowed, limited, timeout, error, \
             circuit_open (skipped while the breaker is open)",
            store_operations.clone(),
        );
        registry.register(
            "store_operation_duration_seconds",
            "Time a request waited for one shared-store operation",
            store_duration.clone(),
        );
        registry.register(
            "store_fallbacks",
            "Limit decisions made by the [store] on_error policy because the store did not answer",
            store_fallbacks.clone(),
        );
        registry.register(
            "store_local_refusals",
            "Requests refused from a key remembered over its limit, without asking the store",
            store_local_refusals.clone(),
        );
        registry.register(
            "store_up",
            "1 while the shared store answers, 0 while its circuit breaker is open",
            store_up.clone(),
        );
        // Series a dashboard or an alert names are there from the start, at zero, rather than
        // missing until their first event.
        for outcome in ["ok", "failed"] {
            let _ = config_reloads.get_or_create(&OutcomeLabels { outcome });
        }
        for reason in ["upstream_unavailable", "upstream_timeout"] {
            let _ = upstream_errors.get_or_create(&ReasonLabels { reason });
        }
        for result in ["ok", "failed"] {
            let _ = upstream_dns_lookups.get_or_create(&ResultLabels { result });
        }
        Arc::new(Metrics {
            request_counters: thread_local::ThreadLocal::new(),
            session_lookups,
            session_cache_hits,
            revocations,
            revocations_subscribed,
            registry,
            requests,
            refusals,
            request_duration,
            upstream_duration,
            upstream_errors,
            upstream_dns_lookups,
            upstream_dns_stale,
            jwks_fetches,
            open_connections,
            parked_connections,
            config_reloads,
            tls_certificate_expiry,
            tls_certificate_reloads,
            tls_handshake_failures,
            store_operations,
            store_duration,
            store_fallbacks,
            store_local_refusals,
            store_up,
        })
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    pub(crate) fn record_request(
        &self,
        route: &'static str,
        method: &http::Method,
        status: u16,
        took: Duration,
    ) {
        let labels = RequestLabels {
            route,
            method: method_label(method),
            status: status_class(status),
        };
        let mut counters = self.request_counters.get_or_default().borrow_mut();
        // The labels are 'static strings: the same label is the same pointer (a reload's new
        // route strings miss and are looked up again; the bound keeps that from growing).
        let same = |known: &RequestLabels| {
            std::ptr::eq(known.route, labels.route)
                && std::ptr::eq(known.method, labels.method)
                && std::ptr::eq(known.status, labels.status)
        };
        match counters.iter().find(|(known, _)| same(known)) {
            Some((_, counter)) => {
                counter.inc();
            }
            None => {
                if counters.len() >= MAX_CACHED_REQUEST_COUNTERS {
                    counters.clear();
                }
                let counter = self.requests.get_or_create(&labels).clone();
                counter.inc();
                counters.push((labels, counter));
            }
        }
        self.request_duration.observe(took.as_secs_f64());
    }

    pub(crate) fn record_refusal(&self, reason: &'static str) {
        self.refusals.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Publishes a JWKS URL's fetch counters at zero before its first fetch.
    pub(crate) fn announce_jwks_source(&self, url: &str) {
        for outcome in ["ok", "failed"] {
            let _ = self.jwks_fetches.get_or_create(&JwksLabels {
                url: url.to_string(),
                outcome,
            });
        }
    }

    pub(crate) fn record_jwks_fetch(&self, url: &str, ok: bool) {
        self.jwks_fetches
            .get_or_create(&JwksLabels {
                url: url.to_string(),
                outcome: if ok { "ok" } else { "failed" },
            })
            .inc();
    }

    pub(crate) fn record_store_fallback(&self, policy: &'static str) {
        self.store_fallbacks
            .get_or_create(&PolicyLabels { policy })
            .inc();
    }

    pub(crate) fn record_reload(&self, ok: bool) {
        self.config_reloads
            .get_or_create(&OutcomeLabels {
                outcome: if ok { "ok" } else { "failed" },
            })
            .inc();
    }
}

fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_series_are_published_at_zero_before_their_first_event() {
        let metrics = Metrics::new();
        metrics.announce_jwks_source("http://auth:3000/api/auth/jwks");
        let text = metrics.render();
        for series in [
            "authgate_jwks_fetches_total{url=\"http://auth:3000/api/auth/jwks\",outcome=\"ok\"} 0",
            "authgate_jwks_fetches_total{url=\"http://auth:3000/api/auth/jwks\",outcome=\"failed\"} 0",
            "authgate_config_reloads_total{outcome=\"ok\"} 0",
            "authgate_upstream_errors_total{reason=\"upstream_timeout\"} 0",
            "authgate_access_log_dropped_lines_total 0",
        ] {
            assert!(text.contains(series), "{series} in\n{text}");
        }
    }

    #[test]
    fn requests_are_counted_by_route_method_and_class_from_every_thread() {
        let metrics = Metrics::new();
        // Two strings with the same text at different addresses, as a reload makes them.
        let route: &'static str = Box::leak(String::from("/api/{user_id}/tasks").into_boxed_str());
        let reloaded: &'static str =
            Box::leak(String::from("/api/{user_id}/tasks").into_boxed_str());
        let took = Duration::from_millis(1);
        std::thread::scope(|scope| {
            for _ in 0..3 {
                scope.spawn(|| {
                    for _ in 0..10 {
                        metrics.record_request(route, &http::Method::GET, 200, took);
                    }
                    metrics.record_request(reloaded, &http::Method::GET, 204, took);
                    metrics.record_request(route, &http::Method::POST, 403, took);
                    metrics.record_request("none", &http::Method::GET, 404, took);
                });
            }
        });
        let text = metrics.render();
        for series in [
            "authgate_requests_total{route=\"/api/{user_id}/tasks\",method=\"GET\",status=\"2xx\"} 33",
            "authgate_requests_total{route=\"/api/{user_id}/tasks\",method=\"POST\",status=\"4xx\"} 3",
            "authgate_requests_total{route=\"none\",method=\"GET\",status=\"4xx\"} 3",
        ] {
            assert!(text.contains(series), "{series} in\n{text}");
        }
        // Past its bound the per-thread cache starts over, and still counts right.
        for i in 0..(MAX_CACHED_REQUEST_COUNTERS + 10) {
            let route: &'static str = Box::leak(format!("/r{}", i % 3).into_boxed_str());
            metrics.record_request(route, &http::Method::GET, 200, took);
        }
        let text = metrics.render();
        let total: u64 = (0..3)
            .map(|i| {
                let prefix = format!(
                    "authgate_requests_total{{route=\"/r{i}\",method=\"GET\",status=\"2xx\"}} "
                );
                text.lines()
                    .find_map(|line| line.strip_prefix(prefix.as_str()))
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .sum();
        assert_eq!(total, (MAX_CACHED_REQUEST_COUNTERS + 10) as u64);
    }
}
