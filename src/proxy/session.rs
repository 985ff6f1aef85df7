//! Better Auth sessions: a session cookie whose signature verified (request::auth::session) is
//! checked with Better Auth itself, `GET {base_url}/api/auth/get-session` with only that cookie,
//! and the answer is cached.
//!
//! - The cache is keyed by the SHA-256 of the session token, never the token itself, and an
//!   entry lives `min(cache_ttl, the session's end)`. Signing out therefore takes effect within
//!   `cache_ttl` (at once for a session named by `POST /revoke`).
//! - Concurrent requests with one token make one call (single flight): the first caller asks,
//!   the others wait for its answer; if the first goes away, the next one asks.
//! - A session that ended is remembered for a short while (`ENDED_TTL`), so a signed-out browser
//!   that keeps polling costs Better Auth one call per period, not one per request.
//! - When Better Auth is down, slow (`timeout`), or answers something that is not a session or
//!   `null`, the request gets 503 `session_unavailable` with `Retry-After`, and that failure is
//!   remembered for `UNAVAILABLE_TTL` so a down server is not hammered. A cookie is never taken
//!   on trust.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{ACCEPT, COOKIE};
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::Empty;
use tokio::sync::OnceCell;

use crate::config::SessionConfig;
use crate::core::error::GatewayError;
use crate::core::metrics::{Metrics, ResultLabels};
use crate::core::token_error::TokenError;
use crate::proxy::fetch::{self, FetchClient};
use crate::request::auth::{
    session_identity, Identity, SessionAnswerError, SessionCookies, TokenCache,
};

/// An answer larger than this is not a session.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// How long a session Better Auth said has ended is answered 401 without asking again.
const ENDED_TTL: Duration = Duration::from_secs(5);
/// How long a failed call is answered 503 without asking again.
const UNAVAILABLE_TTL: Duration = Duration::from_secs(1);
/// `Retry-After` on `session_unavailable`.
const RETRY_AFTER_SECS: u64 = 2;
/// Remembered failures at most (ended sessions and unavailable answers together).
const MAX_REMEMBERED_FAILURES: usize = 10_000;

type TokenHash = [u8; 32];

/// The outcome of one call, shared by every request that waited for it.
#[derive(Clone)]
enum Lookup {
    Valid(Arc<Identity>),
    Failed(Failure),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Failure {
    Ended,
    InvalidUserId,
    Unavailable,
}

impl Failure {
    fn error(self) -> GatewayError {
        match self {
            Failure::Ended => GatewayError::Unauthorized(TokenError::SessionExpired),
            Failure::InvalidUserId => {
                GatewayError::Unauthorized(crate::core::token_error::InvalidClaim::UserId.into())
            }
            Failure::Unavailable => GatewayError::SessionUnavailable {
                retry_after: RETRY_AFTER_SECS,
            },
        }
    }
}

pub struct SessionClient {
    settings: SessionConfig,
    url: Uri,
    cookies: SessionCookies,
    client: FetchClient,
    user_claim: Box<str>,
    /// Sessions Better Auth vouched for, by token hash, until `min(cache_ttl, end)`.
    cache: TokenCache,
    /// Failures remembered briefly, by token hash.
    failures: Mutex<HashMap<TokenHash, (Instant, Failure)>>,
    /// One call per token at a time.
    in_flight: Mutex<HashMap<TokenHash, Arc<OnceCell<Lookup>>>>,
    metrics: Arc<Metrics>,
}

impl SessionClient {
    pub fn new(
        settings: &SessionConfig,
        user_claim: &str,
        metrics: Arc<Metrics>,
    ) -> Result<SessionClient, String> {
        let url: Uri = settings
            .session_url()
            .parse()
            .map_err(|err| format!("auth.session.base_url: {err}"))?;
        let client = fetch::client(&url, settings.timeout)
            .map_err(|why| format!("auth.session.base_url: {why}"))?;
        Ok(SessionClient {
            cookies: SessionCookies::new(&settings.cookie_prefix, &settings.secret.0),
            settings: settings.clone(),
            url,
            client,
            user_claim: user_claim.into(),
            cache: TokenCache::new(settings.cache_size),
            failures: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    /// The settings this client was built from: a reload keeps it (and its cache) when they and
    /// the user claim did not change.
    pub fn same_settings(&self, settings: &SessionConfig, user_claim: &str) -> bool {
        self.settings == *settings && *self.user_claim == *user_claim
    }

    pub fn cookies(&self) -> &SessionCookies {
        &self.cookies
    }

    /// The identity of a signed session cookie already in the cache, without a call: lets the
    /// pipeline skip the shared brute-force guard (a store round trip) for a known session.
    pub fn cached(&self, headers: &HeaderMap, now: u64) -> Option<Arc<Identity>> {
        let signed = self.cookies.signed_session(headers).ok()?;
        let hash = ring::digest::digest(&ring::digest::SHA256, signed.token.as_bytes());
        let identity = self.cache.get(hash.as_ref(), now, 0)?;
        self.metrics.session_cache_hits.inc();
        Some(identity)
    }

    /// The identity of the session cookie in `headers`. A forged, unsigned or doubled cookie is
    /// refused here without a call; a signed one is answered from the cache or by Better Auth.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        now: u64,
    ) -> Result<Arc<Identity>, GatewayError> {
        let signed = self
            .cookies
            .signed_session(headers)
            .map_err(GatewayError::Unauthorized)?;
        let hash: TokenHash = ring::digest::digest(&ring::digest::SHA256, signed.token.as_bytes())
            .as_ref()
            .try_into()
            .map_err(|_| GatewayError::SessionUnavailable {
                retry_after: RETRY_AFTER_SECS,
            })?;
        if let Some(identity) = self.cache.get(&hash, now, 0) {
            self.metrics.session_cache_hits.inc();
            return Ok(identity);
        }
        if let Some(failure) = self.remembered_failure(&hash) {
            return Err(failure.error());
        }
        let cell = self
            .lock_in_flight()
            .entry(hash)
            .or_insert_with(|| Arc::new(OnceCell::new()))
            .clone();
        let lookup = cell
            .get_or_init(|| self.ask_and_remember(headers, hash, now))
            .await
            .clone();
        // The first to finish takes the entry out; a later caller finds the answer cached.
        let mut in_flight = self.lock_in_flight();
        if in_flight
            .get(&hash)
            .is_some_and(|entry| Arc::ptr_eq(entry, &cell))
        {
            in_flight.remove(&hash);
        }
        drop(in_flight);
        match lookup {
            Lookup::Valid(identity) => Ok(identity),
            Lookup::Failed(failure) => Err(failure.error()),
        }
    }

    fn lock_in_flight(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<TokenHash, Arc<OnceCell<Lookup>>>> {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn remembered_failure(&self, hash: &TokenHash) -> Option<Failure> {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        match failures.get(hash) {
            Some(&(until, failure)) if Instant::now() < until => Some(failure),
            Some(_) => {
                failures.remove(hash);
                None
            }
            None => None,
        }
    }

    fn remember_failure(&self, hash: TokenHash, failure: Failure) {
        let ttl = match failure {
            Failure::Unavailable => UNAVAILABLE_TTL,
            Failure::Ended | Failure::InvalidUserId => ENDED_TTL.min(self.settings.cache_ttl),
        };
        if ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if failures.len() >= MAX_REMEMBERED_FAILURES {
            failures.retain(|_, (until, _)| now < *until);
            if failures.len() >= MAX_REMEMBERED_FAILURES {
                // Every entry is recent: a flood of distinct signed cookies. Forget them all
                // rather than grow; each is asked again at most once per TTL.
                failures.clear();
            }
        }
        failures.insert(hash, (now + ttl, failure));
    }

    /// One call to Better Auth, its outcome counted, cached and remembered.
    async fn ask_and_remember(&self, headers: &HeaderMap, hash: TokenHash, now: u64) -> Lookup {
        let outcome = tokio::time::timeout(self.settings.timeout, self.ask(headers)).await;
        let answer = match outcome {
            Ok(Ok(body)) => session_identity(&body, &self.user_claim, now),
            Ok(Err(why)) => Err(SessionAnswerError::Unreadable(why)),
            Err(_) => Err(SessionAnswerError::Unreadable(format!(
                "no answer within auth.session.timeout ({:?})",
                self.settings.timeout
            ))),
        };
        let (result, lookup) = match answer {
            Ok(answer) => {
                let identity = Arc::new(answer.identity);
                let cached_until = now
                    .saturating_add(self.settings.cache_ttl.as_secs())
                    .min(answer.expires_at);
                self.cache.insert(&hash, identity.clone(), cached_until, 0);
                ("valid", Lookup::Valid(identity))
            }
            Err(SessionAnswerError::Ended) => ("ended", Lookup::Failed(Failure::Ended)),
            Err(SessionAnswerError::UserId) => ("ended", Lookup::Failed(Failure::InvalidUserId)),
            Err(SessionAnswerError::Unreadable(why)) => {
                tracing::warn!(
                    url = %self.url,
                    error = %why,
                    "Better Auth did not answer about a session; the request gets 503"
                );
                ("unavailable", Lookup::Failed(Failure::Unavailable))
            }
        };
        self.metrics
            .session_lookups
            .get_or_create(&ResultLabels { result })
            .inc();
        if let Lookup::Failed(failure) = &lookup {
            self.remember_failure(hash, *failure);
        }
        lookup
    }

    /// `GET get-session` with only the session cookie; the body of a 200 answer.
    async fn ask(&self, headers: &HeaderMap) -> Result<Bytes, String> {
        let cookie = self
            .cookies
            .cookie_for_better_auth(headers)
            .ok_or("the session cookie cannot be sent on")?;
        let request = Request::get(self.url.clone())
            .header(ACCEPT, "application/json")
            .header(COOKIE, cookie)
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
        let media_type = fetch::media_type(response.headers());
        if media_type != "application/json" {
            return Err(format!("content type {media_type:?}, not application/json"));
        }
        fetch::body_up_to(response.into_body(), MAX_ANSWER_BYTES).await
    }
}
