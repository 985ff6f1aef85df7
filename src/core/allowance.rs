//! What an allowed request has left of its rate limit, and the `RateLimit-*` headers that say so
//! (on allowed answers, and on the 429 that `error.rs` renders).

use http::header::{HeaderMap, HeaderName, HeaderValue};

pub static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
pub static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
pub static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// The state of a bucket after an allowed request, for the RateLimit-* headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset: u64,
}

impl Allowance {
    pub(crate) fn write_headers(&self, headers: &mut HeaderMap) {
        headers.insert(RATELIMIT_LIMIT.clone(), HeaderValue::from(self.limit));
        headers.insert(
            RATELIMIT_REMAINING.clone(),
            HeaderValue::from(self.remaining),
        );
        headers.insert(RATELIMIT_RESET.clone(), HeaderValue::from(self.reset));
    }
}
