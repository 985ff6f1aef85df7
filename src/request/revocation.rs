//! Revoked subjects and sessions (`POST /revoke` on the admin listener), checked on every
//! authenticated request, after the token or session caches: a cached identity is never served
//! once it is revoked.
//!
//! - A subject revoked `before` T refuses every token of that subject issued before T (`iat`; a
//!   token without `iat` cannot show it is newer and is refused too). Tokens issued later pass:
//!   signing in again works.
//! - A revoked session id refuses every token whose `sid` claim names it, and that session's
//!   cookie.
//! - An entry lives `auth.max_lifetime` past the moment it covers: no token it could refuse is
//!   still valid after that.
//!
//! Pure data: sharing revocations across replicas is `proxy::revocation_sync`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::RwLock;

use serde_json::Value;

use crate::core::token_error::TokenError;
use crate::request::auth::Identity;

/// Entries kept at most; past it a revocation is refused (the caller learns it did not happen).
pub const MAX_REVOCATIONS: usize = 1_000_000;

/// One revocation, as `POST /revoke` takes it and as replicas share it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// Tokens of `sub` issued before `before` (seconds since the epoch).
    Subject { sub: String, before: u64 },
    /// The session `sid`.
    Session { sid: String },
}

impl Revocation {
    /// The second after which no token this revocation refuses can still be valid.
    pub fn expires_at(&self, now: u64, max_lifetime_secs: u64) -> u64 {
        match self {
            Revocation::Subject { before, .. } => {
                (*before).max(now).saturating_add(max_lifetime_secs)
            }
            Revocation::Session { .. } => now.saturating_add(max_lifetime_secs),
        }
    }

    /// `sub\t<sub>\t<before>` or `sid\t<sid>`: how replicas exchange it (ids hold no tabs; see
    /// `parse`).
    pub fn encode(&self) -> String {
        match self {
            Revocation::Subject { sub, before } => format!("sub\t{sub}\t{before}"),
            Revocation::Session { sid } => format!("sid\t{sid}"),
        }
    }

    /// What the store publishes to the other replicas: the expiry (unix seconds), a tab, and
    /// the encoding.
    pub fn to_message(&self, expires_at: u64) -> String {
        format!("{expires_at}\t{}", self.encode())
    }

    pub fn from_message(message: &str) -> Option<(Revocation, u64)> {
        let (expires_at, encoded) = message.split_once('\t')?;
        Some((Revocation::decode(encoded)?, expires_at.parse().ok()?))
    }

    pub fn decode(text: &str) -> Option<Revocation> {
        let mut parts = text.split('\t');
        let revocation = match (parts.next()?, parts.next()?) {
            ("sub", sub) => Revocation::Subject {
                sub: sub.to_string(),
                before: parts.next()?.parse().ok()?,
            },
            ("sid", sid) => Revocation::Session {
                sid: sid.to_string(),
            },
            _ => return None,
        };
        (parts.next().is_none() && revocation.id_is_valid()).then_some(revocation)
    }

    /// Ids are what issuers mint: visible ASCII up to 256 bytes (no tabs, no spaces).
    pub fn id_is_valid(&self) -> bool {
        let id = match self {
            Revocation::Subject { sub, .. } => sub,
            Revocation::Session { sid } => sid,
        };
        !id.is_empty() && id.len() <= 256 && id.bytes().all(|b| matches!(b, 0x21..=0x7e))
    }
}

#[derive(Default)]
struct Lists {
    /// sub -> (revoked before, entry expires at)
    subjects: HashMap<String, (u64, u64)>,
    /// sid -> entry expires at
    sessions: HashMap<String, u64>,
}

/// The revocations this replica knows. Reads take a shared lock only while any exist.
#[derive(Default)]
pub struct Revocations {
    lists: RwLock<Lists>,
    count: AtomicUsize,
}

impl Revocations {
    /// Records a revocation; false when it was already known (nothing changed) or the list is
    /// full.
    pub fn add(
        &self,
        revocation: &Revocation,
        expires_at: u64,
        now: u64,
    ) -> Result<bool, &'static str> {
        let mut lists = self
            .lists
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.count.load(Ordering::Relaxed) >= MAX_REVOCATIONS {
            Self::prune(&mut lists, now);
            self.count.store(
                lists.subjects.len() + lists.sessions.len(),
                Ordering::Relaxed,
            );
            if self.count.load(Ordering::Relaxed) >= MAX_REVOCATIONS {
                return Err("too many revocations in force");
            }
        }
        let changed = match revocation {
            Revocation::Subject { sub, before } => match lists.subjects.get_mut(sub) {
                Some((known_before, known_expiry)) if *known_before >= *before => {
                    *known_expiry = (*known_expiry).max(expires_at);
                    false
                }
                Some(entry) => {
                    *entry = (*before, expires_at.max(entry.1));
                    true
                }
                None => {
                    lists.subjects.insert(sub.clone(), (*before, expires_at));
                    true
                }
            },
            Revocation::Session { sid } => {
                let previous = lists.sessions.insert(sid.clone(), expires_at);
                if let Some(previous) = previous {
                    lists.sessions.insert(sid.clone(), previous.max(expires_at));
                }
                previous.is_none()
            }
        };
        self.count.store(
            lists.subjects.len() + lists.sessions.len(),
            Ordering::Release,
        );
        Ok(changed)
    }

    /// Drops entries that can no longer refuse anything.
    pub fn prune_expired(&self, now: u64) {
        if self.count.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut lists = self
            .lists
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Self::prune(&mut lists, now);
        self.count.store(
            lists.subjects.len() + lists.sessions.len(),
            Ordering::Release,
        );
    }

    fn prune(lists: &mut Lists, now: u64) {
        lists.subjects.retain(|_, (_, expires)| *expires > now);
        lists.sessions.retain(|_, expires| *expires > now);
    }

    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `Err(Revoked)` when the identity's subject (issued before the cut) or session is revoked.
    pub fn check(&self, identity: &Identity) -> Result<(), TokenError> {
        if self.count.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        let lists = self
            .lists
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let claims = &identity.claims;
        if let Some(Value::String(sid)) = claims.get("sid") {
            if lists.sessions.contains_key(sid) {
                return Err(TokenError::Revoked);
            }
        }
        let subject = match claims.get("sub") {
            Some(Value::String(sub)) => sub.as_str(),
            _ => identity.user_id.as_str(),
        };
        if let Some((before, _)) = lists.subjects.get(subject) {
            let issued_at = claims.get("iat").and_then(Value::as_u64);
            if issued_at.is_none_or(|iat| iat < *before) {
                return Err(TokenError::Revoked);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(sub: &str, iat: Option<u64>, sid: Option<&str>) -> Identity {
        let mut claims = serde_json::Map::new();
        claims.insert("sub".into(), sub.into());
        if let Some(iat) = iat {
            claims.insert("iat".into(), iat.into());
        }
        if let Some(sid) = sid {
            claims.insert("sid".into(), sid.into());
        }
        Identity {
            user_id: sub.into(),
            header_value: http::HeaderValue::from_str(sub).unwrap(),
            claims,
        }
    }

    #[test]
    fn subjects_before_a_time_and_sessions_are_refused() {
        let list = Revocations::default();
        assert!(list
            .check(&identity("alice", Some(100), Some("s1")))
            .is_ok());
        let alice = Revocation::Subject {
            sub: "alice".into(),
            before: 200,
        };
        assert_eq!(list.add(&alice, 1_000, 150), Ok(true));
        assert_eq!(list.add(&alice, 1_000, 150), Ok(false), "known already");
        assert_eq!(
            list.check(&identity("alice", Some(199), None)),
            Err(TokenError::Revoked)
        );
        assert_eq!(
            list.check(&identity("alice", None, None)),
            Err(TokenError::Revoked)
        );
        assert!(
            list.check(&identity("alice", Some(200), None)).is_ok(),
            "signed in again"
        );
        assert!(list.check(&identity("bob", Some(1), None)).is_ok());
        let session = Revocation::Session { sid: "s9".into() };
        assert_eq!(list.add(&session, 1_000, 150), Ok(true));
        assert_eq!(
            list.check(&identity("bob", Some(500), Some("s9"))),
            Err(TokenError::Revoked)
        );
        list.prune_expired(1_000);
        assert!(list.is_empty());
        assert!(list.check(&identity("alice", Some(1), Some("s9"))).is_ok());
    }

    #[test]
    fn the_wire_form_round_trips_and_refuses_junk() {
        for revocation in [
            Revocation::Subject {
                sub: "user-1".into(),
                before: 1_700_000_000,
            },
            Revocation::Session { sid: "abc".into() },
        ] {
            assert_eq!(Revocation::decode(&revocation.encode()), Some(revocation));
        }
        for junk in [
            "",
            "sub\talice",
            "sid\t",
            "sid\ta b",
            "xid\ta",
            "sid\ta\textra",
            "sub\ta\tsoon",
        ] {
            assert_eq!(Revocation::decode(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn a_message_carries_the_revocation_and_its_expiry() {
        for revocation in [
            Revocation::Subject {
                sub: "alice".into(),
                before: 1_700_000_000,
            },
            Revocation::Session { sid: "s-1".into() },
        ] {
            let text = revocation.to_message(1_800_000_000);
            assert_eq!(
                Revocation::from_message(&text),
                Some((revocation, 1_800_000_000))
            );
        }
        for garbage in [
            "",
            "12",
            "x\tsid\ts",
            "12\tsid",
            "12\tnope\tx",
            "-1\tsid\ts",
        ] {
            assert_eq!(Revocation::from_message(garbage), None, "{garbage:?}");
        }
    }
}
