//! A remote JWKS (Better Auth serves one at `{baseURL}/api/auth/jwks`), kept fresh.
//!
//! - Fetched at start-up in the background: the gateway starts even when the auth server is down,
//!   and answers 503 on protected routes until a first set arrives.
//! - Refreshed every `jwks_refresh`, or sooner when `Cache-Control: max-age` says so (never sooner
//!   than `jwks_cooldown`).
//! - A token with an unknown `kid` triggers a refetch, coalesced across concurrent requests and
//!   throttled to one per cooldown, so a flood of made-up `kid`s cannot be turned into a flood of
//!   requests against the auth server.
//! - A failed fetch (down, timeout, non-200, wrong content type, too large, not JSON, no usable key)
//!   keeps the last good set (stale-if-error) and is logged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use http::{Request, StatusCode, Uri};
use http_body_util::Empty;

use std::future::Future;
use std::pin::Pin;

use crate::config::AuthConfig;
use crate::config::IssuerConfig;
use crate::core::jose::KeySet;
use crate::core::metrics::Metrics;
use crate::request::auth::{Authenticator, RemoteKeys};

/// A JWKS larger than this is refused: real sets are a few KiB.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

pub struct RemoteJwks {
    url: Uri,
    label: String,
    client: crate::proxy::fetch::FetchClient,
    timeout: Duration,
    refresh: Duration,
    cooldown: Duration,
    keys: ArcSwapOption<KeySet>,
    /// Serializes fetches, so concurrent unknown-`kid` requests wait for one fetch instead of each
    /// starting their own. Held across the fetch's await on purpose; the hot path never takes it.
    fetch_lock: tokio::sync::Mutex<()>,
    last_attempt: Mutex<Option<Instant>>,
    /// Counts completed fetch attempts; lets a waiter see that a fetch happened while it waited.
    attempts: AtomicU64,
    /// Bumped whenever the installed set changes; verified-token cache entries remember it.
    generation: AtomicU64,
    pub fetches_ok: AtomicU64,
    pub fetches_failed: AtomicU64,
    metrics: Arc<Metrics>,
}

impl RemoteJwks {
    pub fn new(url: Uri, issuer: &IssuerConfig, metrics: Arc<Metrics>) -> RemoteJwks {
        metrics.announce_jwks_source(&url.to_string());
        // https:// is verified against the Mozilla roots (webpki-roots), never skipped. Without
        // TLS set up, a plain client cannot reach an https URL: every fetch fails and is logged.
        let client = crate::proxy::fetch::client(&url, issuer.jwks_timeout).unwrap_or_else(|why| {
            tracing::error!(url = %url, "JWKS {why}");
            crate::proxy::fetch::client(&Uri::from_static("http://unused"), issuer.jwks_timeout)
                .expect("a plain HTTP client needs no TLS set-up")
        });
        RemoteJwks {
            url,
            label: issuer.label.clone(),
            client,
            timeout: issuer.jwks_timeout,
            refresh: issuer.jwks_refresh,
            cooldown: issuer.jwks_cooldown,
            keys: ArcSwapOption::empty(),
            fetch_lock: tokio::sync::Mutex::new(()),
            last_attempt: Mutex::new(None),
            attempts: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            fetches_ok: AtomicU64::new(0),
            fetches_failed: AtomicU64::new(0),
            metrics,
        }
    }

    /// True when a new config asks for exactly this source, so a reload can keep it (and its keys).
    pub(crate) fn same_settings(&self, url: &Uri, issuer: &IssuerConfig) -> bool {
        self.url == *url
            && self.timeout == issuer.jwks_timeout
            && self.refresh == issuer.jwks_refresh
            && self.cooldown == issuer.jwks_cooldown
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn url(&self) -> &Uri {
        &self.url
    }

    /// Starts the background refresh. The task holds only a weak reference: it ends by itself once
    /// no gateway uses this source any more (after a reload that dropped it, or at shutdown).
    pub(crate) fn spawn_refresher(self: &Arc<Self>, runtime: &tokio::runtime::Handle) {
        let weak = Arc::downgrade(self);
        runtime.spawn(refresh_while_used(weak));
    }

    /// The current set, if one was ever fetched.
    pub fn keys(&self) -> Option<Arc<KeySet>> {
        self.keys.load_full()
    }

    /// Refetches unless a fetch was attempted within the cooldown; concurrent callers share one
    /// fetch. Returns the set in force afterwards.
    pub(crate) async fn refetch_throttled(&self) -> Option<Arc<KeySet>> {
        let seen = self.attempts.load(Ordering::Acquire);
        let _guard = self.fetch_lock.lock().await;
        if self.attempts.load(Ordering::Acquire) != seen {
            // Someone fetched while we waited for the lock: use their result.
            return self.keys();
        }
        let recently = self
            .last_attempt
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_some_and(|at| at.elapsed() < self.cooldown);
        if !recently {
            let _ = self.fetch_now().await;
        }
        self.keys()
    }

    /// One fetch attempt. Callers hold `fetch_lock`. Ok carries the server's max-age, if any.
    async fn fetch_now(&self) -> Result<Option<Duration>, ()> {
        *self
            .last_attempt
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Instant::now());
        let result = tokio::time::timeout(self.timeout, self.fetch_document()).await;
        self.attempts.fetch_add(1, Ordering::AcqRel);
        let outcome = match result {
            Ok(Ok((json, max_age))) => match KeySet::parse(&json) {
                Ok((set, problems)) => {
                    for problem in &problems {
                        tracing::warn!(source = %self.label, url = %self.url, "JWKS: skipped a key: {problem}");
                    }
                    if set.is_empty() {
                        Err("the set has no usable key".to_string())
                    } else {
                        self.install(set);
                        Ok(max_age)
                    }
                }
                Err(why) => Err(why),
            },
            Ok(Err(why)) => Err(why),
            Err(_) => Err(format!("no complete answer within {:?}", self.timeout)),
        };
        match outcome {
            Ok(max_age) => {
                self.fetches_ok.fetch_add(1, Ordering::Relaxed);
                self.metrics.record_jwks_fetch(&self.url.to_string(), true);
                Ok(max_age)
            }
            Err(why) => {
                self.fetches_failed.fetch_add(1, Ordering::Relaxed);
                self.metrics.record_jwks_fetch(&self.url.to_string(), false);
                let stale = self.keys.load().is_some();
                tracing::warn!(source = %self.label, url = %self.url, keeping_last_good_set = stale, "JWKS fetch failed: {why}");
                Err(())
            }
        }
    }

    fn install(&self, set: KeySet) {
        let changed = self
            .keys
            .load()
            .as_ref()
            .is_none_or(|old| old.fingerprint() != set.fingerprint());
        if changed {
            tracing::info!(source = %self.label, url = %self.url, keys = set.len(), kids = %set.kids().join(","), "JWKS installed");
            self.keys.store(Some(Arc::new(set)));
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    async fn fetch_document(&self) -> Result<(Bytes, Option<Duration>), String> {
        let request = Request::get(self.url.clone())
            .header(ACCEPT, "application/jwk-set+json, application/json")
            .body(Empty::new())
            .map_err(|err| format!("bad request: {err}"))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|err| format!("request failed: {err}"))?;
        if response.status() != StatusCode::OK {
            return Err(format!("status {}", response.status()));
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("");
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        if !media_type.eq_ignore_ascii_case("application/json")
            && !media_type.eq_ignore_ascii_case("application/jwk-set+json")
        {
            return Err(format!("unexpected content type {content_type:?}"));
        }
        let max_age = response
            .headers()
            .get(CACHE_CONTROL)
            .and_then(|value| value.to_str().ok())
            .and_then(parse_max_age);
        let body = crate::proxy::fetch::body_up_to(response.into_body(), MAX_JWKS_BYTES).await?;
        Ok((body, max_age))
    }
}

async fn refresh_while_used(source: Weak<RemoteJwks>) {
    loop {
        let Some(this) = source.upgrade() else {
            return;
        };
        let outcome = {
            let _guard = this.fetch_lock.lock().await;
            this.fetch_now().await
        };
        let wait = match outcome {
            Ok(Some(max_age)) => max_age.clamp(this.cooldown, this.refresh),
            Ok(None) => this.refresh,
            // Retry a failing source at the cooldown pace, not the refresh pace, so recovery
            // after an outage is quick.
            Err(()) => this.cooldown,
        };
        drop(this);
        tokio::time::sleep(wait).await;
    }
}

fn parse_max_age(cache_control: &str) -> Option<Duration> {
    cache_control.split(',').find_map(|directive| {
        let (name, value) = directive.trim().split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("max-age") {
            return None;
        }
        value
            .trim()
            .trim_matches('"')
            .parse()
            .ok()
            .map(Duration::from_secs)
    })
}

impl RemoteKeys for RemoteJwks {
    fn keys(&self) -> Option<Arc<KeySet>> {
        RemoteJwks::keys(self)
    }

    fn refetch_throttled(&self) -> Pin<Box<dyn Future<Output = Option<Arc<KeySet>>> + Send + '_>> {
        Box::pin(RemoteJwks::refetch_throttled(self))
    }

    fn generation(&self) -> u64 {
        RemoteJwks::generation(self)
    }
}

/// The authenticator for a (re)loaded config, with a `RemoteJwks` per `jwks_url` (its refresh
/// started when there is a runtime). Sources of `previous` whose settings are unchanged are
/// reused with their keys, so a reload never starts from no keys. Returns the sources too, for
/// readiness and metrics.
pub fn authenticator(
    auth: &AuthConfig,
    metrics: &Arc<Metrics>,
    previous: &[Arc<RemoteJwks>],
) -> (Authenticator, Vec<Arc<RemoteJwks>>) {
    let runtime = tokio::runtime::Handle::try_current().ok();
    let mut sources: Vec<Arc<RemoteJwks>> = Vec::new();
    let authenticator = Authenticator::with_sources(auth, |config| {
        let url = config.jwks_url.as_ref()?;
        let reused = previous
            .iter()
            .find(|remote| remote.same_settings(url, config))
            .cloned();
        let remote = reused.unwrap_or_else(|| {
            let remote = Arc::new(RemoteJwks::new(url.clone(), config, metrics.clone()));
            match &runtime {
                Some(runtime) => remote.spawn_refresher(runtime),
                None => tracing::warn!(
                    source = %config.label,
                    "no runtime: the JWKS will be fetched on first use only"
                ),
            }
            remote
        });
        sources.push(remote.clone());
        Some(remote as Arc<dyn RemoteKeys>)
    });
    (authenticator, sources)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age() {
        assert_eq!(
            parse_max_age("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(
            parse_max_age("Max-Age=\"60\""),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_max_age("no-store"), None);
        assert_eq!(parse_max_age("max-age=soon"), None);
    }
}
