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
//!
//! In front of the shared cache, each thread keeps a few entries of its own (`LOCAL_SLOTS`), under
//! the same rules plus one: an entry only answers for the cache that made it. A hit there touches
//! no lock and no memory another thread writes: the shared shard's mutex and the shared
//! `Arc<Identity>` count were the two places where the workers' caches fought over the same cache
//! lines on every request (perf). The thread's entry holds its own copy of the identity.

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::Identity;

/// Longer tokens are verified every time rather than cached, which caps the cache's memory.
pub(crate) const MAX_CACHED_TOKEN: usize = 4096;
const SHARDS: usize = 16;
/// Entries each thread keeps in front of the shared cache (direct-mapped).
const LOCAL_SLOTS: usize = 64;

struct Entry {
    token: Box<[u8]>,
    identity: Arc<Identity>,
    /// The token's `exp`: the entry is usable strictly before this second.
    expires_at: u64,
    generation: u64,
}

type Shard = HashMap<u64, Entry, BuildHasherDefault<PassThroughHasher>>;

pub(crate) struct TokenCache {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    hasher: RandomState,
    /// Which cache a thread's entry belongs to: caches come and go with reloads.
    id: u64,
}

/// A thread's own entry: `Entry`, and the cache it answers for.
struct LocalEntry {
    cache: u64,
    entry: Entry,
}

thread_local! {
    static LOCAL: RefCell<Vec<Option<LocalEntry>>> =
        RefCell::new((0..LOCAL_SLOTS).map(|_| None).collect());
}

/// The thread slot for a token, from its last bytes (for a signed token, signature bytes), its
/// length and a per-process random seed, so slots cannot be aimed at from outside. A collision
/// only evicts a thread's entry.
fn local_slot(token: &[u8]) -> usize {
    static SEED: std::sync::LazyLock<u64> =
        std::sync::LazyLock::new(|| RandomState::new().hash_one(0u8));
    let tail = &token[token.len().saturating_sub(8)..];
    let mixed = tail.iter().fold(*SEED ^ token.len() as u64, |acc, &byte| {
        (acc ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3)
    });
    ((mixed ^ (mixed >> 29)) as usize) % LOCAL_SLOTS
}

impl Entry {
    fn answers(&self, token: &[u8], now: u64, generation: u64) -> bool {
        *self.token == *token && now < self.expires_at && self.generation == generation
    }
}

impl TokenCache {
    pub fn new(capacity: usize) -> TokenCache {
        let per_shard = capacity.div_ceil(SHARDS);
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        TokenCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard,
            hasher: RandomState::new(),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    fn slot(&self, token: &[u8]) -> (&Mutex<Shard>, u64) {
        let hash = self.hasher.hash_one(token);
        (&self.shards[(hash as usize) % SHARDS], hash)
    }

    /// The identity a token was verified as, if it is cached and still usable. `token` is the raw
    /// header bytes: only verified tokens are ever cached, so a hit needs no other check.
    pub(crate) fn get(&self, token: &[u8], now: u64, generation: u64) -> Option<Arc<Identity>> {
        if self.per_shard == 0 {
            return None;
        }
        let local = local_slot(token);
        let hit = LOCAL.with(|slots| match &slots.borrow()[local] {
            Some(mine) if mine.cache == self.id && mine.entry.answers(token, now, generation) => {
                Some(mine.entry.identity.clone())
            }
            _ => None,
        });
        if hit.is_some() {
            return hit;
        }
        let (shard, hash) = self.slot(token);
        let shared = {
            let shard = shard
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let entry = shard.get(&hash)?;
            if !entry.answers(token, now, generation) {
                return None;
            }
            (entry.identity.clone(), entry.expires_at, entry.generation)
        };
        Some(self.keep_locally(token, &shared.0, shared.1, shared.2))
    }

    /// Copies an entry into this thread's slot, with an identity of its own; returns that copy.
    fn keep_locally(
        &self,
        token: &[u8],
        identity: &Identity,
        expires_at: u64,
        generation: u64,
    ) -> Arc<Identity> {
        let own = Arc::new(identity.clone());
        let entry = Entry {
            token: token.into(),
            identity: own.clone(),
            expires_at,
            generation,
        };
        LOCAL.with(|slots| {
            slots.borrow_mut()[local_slot(token)] = Some(LocalEntry {
                cache: self.id,
                entry,
            });
        });
        own
    }

    pub(crate) fn insert(
        &self,
        token: &[u8],
        identity: Arc<Identity>,
        expires_at: u64,
        generation: u64,
    ) {
        if self.per_shard == 0 || token.len() > MAX_CACHED_TOKEN {
            return;
        }
        self.keep_locally(token, &identity, expires_at, generation);
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
        cache.insert(b"tok-a", identity("alice"), 1000, 7);
        assert_eq!(cache.get(b"tok-a", 999, 7).unwrap().user_id, "alice");
        assert!(
            cache.get(b"tok-a", 1000, 7).is_none(),
            "usable strictly before exp"
        );
        assert!(
            cache.get(b"tok-a", 10, 8).is_none(),
            "a key change invalidates"
        );
        assert!(cache.get(b"tok-b", 10, 7).is_none());
    }

    #[test]
    fn a_threads_own_entries_follow_the_same_rules_and_answer_only_for_their_cache() {
        let cache = TokenCache::new(100);
        cache.insert(b"tok-a", identity("alice"), 1000, 7);
        // Served from this thread's slot now; the same rules hold there.
        let first = cache.get(b"tok-a", 999, 7).unwrap();
        let second = cache.get(b"tok-a", 999, 7).unwrap();
        assert!(Arc::ptr_eq(&first, &second), "the thread's own copy");
        assert!(cache.get(b"tok-a", 1000, 7).is_none());
        assert!(cache.get(b"tok-a", 10, 8).is_none());
        assert!(cache.get(b"tok-A", 10, 7).is_none());
        // Another cache (a reloaded gateway) never sees this thread's entries of the first one.
        let other = TokenCache::new(100);
        assert!(other.get(b"tok-a", 10, 7).is_none());
        // Another thread gets the shared entry, as its own copy.
        let from_other_thread = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    cache
                        .get(b"tok-a", 999, 7)
                        .map(|id| Arc::as_ptr(&id) as usize)
                })
                .join()
                .unwrap()
        });
        assert!(from_other_thread.is_some_and(|ptr| ptr != Arc::as_ptr(&first) as usize));
    }

    #[test]
    fn stays_bounded() {
        let cache = TokenCache::new(64);
        for i in 0..10_000 {
            cache.insert(format!("token-{i}").as_bytes(), identity("u"), u64::MAX, 1);
        }
        assert!(cache.len() <= 64, "{}", cache.len());
        let huge = "x".repeat(MAX_CACHED_TOKEN + 1);
        cache.insert(huge.as_bytes(), identity("u"), u64::MAX, 1);
        assert!(cache.get(huge.as_bytes(), 0, 1).is_none());
    }

    #[test]
    fn zero_capacity_disables() {
        let cache = TokenCache::new(0);
        cache.insert(b"t", identity("u"), u64::MAX, 1);
        assert!(cache.get(b"t", 0, 1).is_none());
    }
}
