//! A bounded cache of verified tokens, so a repeated token skips signature verification (an
//! Ed25519 or RSA verify costs tens of microseconds; a lookup costs well under one).
//!
//! Safety rules, each of which a "simplification" could break:
//! - The key is the whole token: an entry is only returned after a full string comparison, so a
//!   hash collision can never hand one user's identity to another token. The 64-bit hash only picks
//!   the slot, and it is keyed with a per-process random key (SipHash) so slots cannot be aimed at.
//! - An entry is never used at or after the token's `exp` (without leeway): after that the token
//!   goes through full verification again, which applies the leeway and refuses it in time.
//! - Every entry records the key generation it was verified under; when any key set changes, the
//!   generation moves and older entries stop matching.
//! - Memory is bounded: at most `capacity` entries of at most `MAX_CACHED_TOKEN` bytes each.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};

use super::Identity;

/// Longer tokens are verified every time rather than cached, which caps the cache's memory.
pub const MAX_CACHED_TOKEN: usize = 4096;
const SHARDS: usize = 16;

struct Entry {
    token: Box<str>,
    identity: Arc<Identity>,
    /// The token's `exp`: the entry is usable strictly before this second.
    expires_at: u64,
    generation: u64,
}

type Shard = HashMap<u64, Entry, BuildHasherDefault<PassThroughHasher>>;

pub struct TokenCache {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    hasher: RandomState,
}

impl TokenCache {
    pub fn new(capacity: usize) -> TokenCache {
        let per_shard = capacity.div_ceil(SHARDS);
        TokenCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard,
            hasher: RandomState::new(),
        }
    }

    fn slot(&self, token: &str) -> (&Mutex<Shard>, u64) {
        let hash = self.hasher.hash_one(token);
        (&self.shards[(hash as usize) % SHARDS], hash)
    }

    pub fn get(&self, token: &str, now: u64, generation: u64) -> Option<Arc<Identity>> {
        if self.per_shard == 0 {
            return None;
        }
        let (shard, hash) = self.slot(token);
        let shard = shard
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = shard.get(&hash)?;
        let usable =
            &*entry.token == token && now < entry.expires_at && entry.generation == generation;
        usable.then(|| entry.identity.clone())
    }

    pub fn insert(&self, token: &str, identity: Arc<Identity>, expires_at: u64, generation: u64) {
        if self.per_shard == 0 || token.len() > MAX_CACHED_TOKEN {
            return;
        }
        let (shard, hash) = self.slot(token);
        let mut shard = shard
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if shard.len() >= self.per_shard && !shard.contains_key(&hash) {
            // Full: drop what can no longer be used; if that frees nothing, start the shard over.
            // Either way the bound holds and the cost is paid once per shard-fill, not per request.
            shard.retain(|_, entry| entry.generation == generation);
            if shard.len() >= self.per_shard {
                shard.clear();
            }
        }
        shard.insert(
            hash,
            Entry {
                token: token.into(),
                identity,
                expires_at,
                generation,
            },
        );
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().map(|shard| shard.len()).unwrap_or(0))
            .sum()
    }
}

/// The keys are already SipHash outputs; hashing them again would only cost time.
#[derive(Default)]
struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(user: &str) -> Arc<Identity> {
        Arc::new(Identity {
            user_id: user.into(),
            header_value: http::HeaderValue::from_str(user).unwrap(),
            claims: Default::default(),
        })
    }

    #[test]
    fn hit_requires_same_token_unexpired_same_generation() {
        let cache = TokenCache::new(100);
        cache.insert("tok-a", identity("alice"), 1000, 7);
        assert_eq!(cache.get("tok-a", 999, 7).unwrap().user_id, "alice");
        assert!(
            cache.get("tok-a", 1000, 7).is_none(),
            "usable strictly before exp"
        );
        assert!(
            cache.get("tok-a", 10, 8).is_none(),
            "a key change invalidates"
        );
        assert!(cache.get("tok-b", 10, 7).is_none());
    }

    #[test]
    fn stays_bounded() {
        let cache = TokenCache::new(64);
        for i in 0..10_000 {
            cache.insert(&format!("token-{i}"), identity("u"), u64::MAX, 1);
        }
        assert!(cache.len() <= 64, "{}", cache.len());
        let huge = "x".repeat(MAX_CACHED_TOKEN + 1);
        cache.insert(&huge, identity("u"), u64::MAX, 1);
        assert!(cache.get(&huge, 0, 1).is_none());
    }

    #[test]
    fn zero_capacity_disables() {
        let cache = TokenCache::new(0);
        cache.insert("t", identity("u"), u64::MAX, 1);
        assert!(cache.get("t", 0, 1).is_none());
    }
}
