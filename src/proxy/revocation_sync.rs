//! Revocations shared through the store: every replica follows them, so a `POST /revoke` made on
//! any replica holds on all of them.
//!
//! Two paths, because Redis pub/sub delivers at most once:
//! - **Messages.** `POST /revoke` publishes the revocation on `{prefix}:revocations:events` in
//!   the same transaction that adds it to `{prefix}:revocations`; every replica holds a
//!   subscription and applies a message as it arrives (one network hop).
//! - **Resync.** The set and its version counter `{prefix}:revocations:version` are the truth. A
//!   replica reads the whole set at start, after every (re)subscription (messages sent while it
//!   was not subscribed are lost), and whenever the version it last read moved: every
//!   `RESYNC_SUBSCRIBED` while subscribed, every `RESYNC_UNSUBSCRIBED` while it is not (Redis
//!   down, subscription refused), so a revocation still arrives within a second then.
//!
//! A subscription that goes silent (a dropped route, a frozen server) is found by a `PING` on it
//! every `SUBSCRIPTION_PING`; it is then dropped and made again. Applying a revocation twice
//! changes nothing, so the paths may overlap freely.

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt as _;

use crate::core::metrics::{Metrics, ResultLabels};
use crate::proxy::store::RedisStore;
use crate::request::revocation::{Revocation, Revocations};

/// How often a replica without a live subscription reads the version counter.
const RESYNC_UNSUBSCRIBED: Duration = Duration::from_millis(500);
/// How often a subscribed replica reads it anyway, should a message have gone missing.
const RESYNC_SUBSCRIBED: Duration = Duration::from_secs(30);
/// How often a subscription is asked whether it is alive, and how long its answer may take.
const SUBSCRIPTION_PING: Duration = Duration::from_secs(5);
const SUBSCRIPTION_PING_TIMEOUT: Duration = Duration::from_secs(2);
/// How long connecting and subscribing may take.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a replica has applied from the store.
struct Follower {
    store: Weak<RedisStore>,
    revocations: Arc<Revocations>,
    metrics: Arc<Metrics>,
    /// The version counter when the set was last read in full.
    known_version: Option<i64>,
}

/// Keeps this replica's revocations in step with the store's; ends within `SUBSCRIPTION_PING`
/// of the store being dropped (a reload that changed `[store]`).
pub(crate) async fn follow(
    store: Weak<RedisStore>,
    revocations: Arc<Revocations>,
    metrics: Arc<Metrics>,
) {
    let mut follower = Follower {
        store,
        revocations,
        metrics,
        known_version: None,
    };
    let mut warned = false;
    loop {
        let Some(store) = follower.store.upgrade() else {
            return;
        };
        let client = store.pubsub_client();
        let channel = store.revocations_channel();
        drop(store);
        match tokio::time::timeout(SUBSCRIBE_TIMEOUT, subscribe(&client, &channel)).await {
            Ok(Ok(pubsub)) => {
                follower.metrics.revocations_subscribed.set(1);
                if warned {
                    tracing::info!(channel = %channel, "following shared revocations again");
                }
                // Whatever was published before the subscription took effect is in the set.
                if !follower.resync().await {
                    return;
                }
                let ended = follower.follow_messages(pubsub).await;
                follower.metrics.revocations_subscribed.set(0);
                let Some(why) = ended else { return };
                tracing::warn!(
                    channel = %channel,
                    error = %why,
                    "lost the subscription to shared revocations; reading them every {RESYNC_UNSUBSCRIBED:?} until it is back"
                );
                warned = true;
            }
            Ok(Err(err)) if !warned => {
                tracing::warn!(channel = %channel, error = %err, "cannot subscribe to shared revocations; reading them every {RESYNC_UNSUBSCRIBED:?} until it can");
                warned = true;
            }
            Err(_) if !warned => {
                tracing::warn!(channel = %channel, "subscribing to shared revocations timed out; reading them every {RESYNC_UNSUBSCRIBED:?} until it can");
                warned = true;
            }
            Ok(Err(_)) | Err(_) => {}
        }
        tokio::time::sleep(RESYNC_UNSUBSCRIBED).await;
        if !follower.resync().await {
            return;
        }
    }
}

async fn subscribe(
    client: &redis::Client,
    channel: &str,
) -> redis::RedisResult<redis::aio::PubSub> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

impl Follower {
    /// Applies messages until the subscription ends: `Some(why)` when it failed, `None` when the
    /// store is gone.
    async fn follow_messages(&mut self, pubsub: redis::aio::PubSub) -> Option<String> {
        let (mut sink, mut messages) = pubsub.split();
        let mut ping = tokio::time::interval(SUBSCRIPTION_PING);
        ping.reset();
        let mut resync = tokio::time::interval(RESYNC_SUBSCRIBED);
        resync.reset();
        loop {
            tokio::select! {
                message = messages.next() => match message {
                    Some(message) => self.apply_message(&message),
                    None => return Some("the connection closed".to_string()),
                },
                _ = ping.tick() => {
                    match tokio::time::timeout(SUBSCRIPTION_PING_TIMEOUT, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(err)) => return Some(err.to_string()),
                        Err(_) => return Some(format!("no answer to PING within {SUBSCRIPTION_PING_TIMEOUT:?}")),
                    }
                    if self.store.strong_count() == 0 {
                        return None;
                    }
                }
                _ = resync.tick() => {
                    if !self.resync().await {
                        return None;
                    }
                }
            }
        }
    }

    fn apply_message(&self, message: &redis::Msg) {
        let parsed = message
            .get_payload::<String>()
            .ok()
            .and_then(|payload| Revocation::from_message(&payload));
        let Some((revocation, expires_at)) = parsed else {
            tracing::warn!(
                channel = message.get_channel_name(),
                "skipped a message on the revocations channel that is not a revocation"
            );
            return;
        };
        let now = unix_now();
        if expires_at > now && self.revocations.add(&revocation, expires_at, now) == Ok(true) {
            self.learned("pubsub", 1);
        }
    }

    /// Reads the whole set when its version moved since the last read. False when the store is
    /// gone; a store that does not answer is tried again at the next resync.
    async fn resync(&mut self) -> bool {
        let Some(store) = self.store.upgrade() else {
            return false;
        };
        let now = unix_now();
        self.revocations.prune_expired(now);
        let Ok(version) = store.revocations_version().await else {
            return true;
        };
        if version.is_none() || version == self.known_version {
            return true;
        }
        let Ok(entries) = store.revocations_in_force(now).await else {
            return true;
        };
        let mut learned = 0u64;
        for (member, expires_at) in entries {
            match Revocation::decode(&member) {
                Some(revocation) => {
                    if self.revocations.add(&revocation, expires_at, now) == Ok(true) {
                        learned += 1;
                    }
                }
                None => tracing::warn!(
                    key = %store.revocations_key(),
                    "skipped an entry of the shared revocations that is not a revocation"
                ),
            }
        }
        self.learned("resync", learned);
        self.known_version = version;
        true
    }

    fn learned(&self, path: &'static str, count: u64) {
        if count > 0 {
            self.metrics
                .revocations
                .get_or_create(&ResultLabels { result: path })
                .inc_by(count);
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}
