//! [`RegistryCache`]: the registry reads of every route (the sender's API key, the
//! recipient's name) and the recipient's presence, kept for a moment in the process.
//!
//! On the cluster every store read is a NATS round trip, and a route made about ten of
//! them (ingest: the key, the sender, the recipient's name and record, its presence; the
//! router: the recipient again); most are the same few records read again and again. The cache keeps positive
//! answers only (an agent that does not exist yet is never remembered as missing) for at
//! most `registry_cache_ms`, and drops an agent's entries:
//! - at once in the process that changes the agent (rotation, revocation, profile,
//!   deregistration call [`RegistryCache::forget`] before they answer);
//! - on every other replica when the change's [`RegistryChange`] event arrives on the bus
//!   (core NATS: well under a millisecond after the changing replica published it, which it
//!   does before it answers);
//! - everywhere at once when the bus may have missed events (a NATS reconnect or a
//!   slow-consumer drop empties the cache), or when a tenant is deleted (`purged`);
//! - everywhere after `registry_cache_ms` at the latest, for an event lost in a way the
//!   bus cannot see.
//!
//! So a revoked key or a deregistered agent stops working on other replicas within the
//! event's delivery (the parity suite checks it within 1.5 s), and never later than
//! `registry_cache_ms` (30 s by default); 0 turns the cache off. The TTL is only the
//! backstop, so it is long: with agents that send about once a second, a 1 s TTL missed on
//! almost every route (two registry reads per route in the cluster, measured). Presence (whether a recipient has a socket, which decides whether a route waits
//! for a push) is kept for [`PRESENCE_TTL`] and dropped by the `presence` event a delivery
//! process publishes when a socket opens (before its first frame) or closes; a stale answer
//! (an event lost) only makes one route wait for a push that does not come, or answer
//! `mailbox_written` where the socket got the message too.
//!
//! [`RegistryChange`]: crate::events::RegistryChange

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use amp_bus::{Bus, subjects};
use amp_store::revocation::{self, Revocation};
use amp_store::suspension::{AgentSuspension, Suspensions as _};
use amp_store::{AgentRecord, ApiKeyRecord, Store};

/// How long a presence count is kept at most (never longer than the registry entries).
/// Delivery announces every socket that opens or closes, so a cached count is dropped when
/// it changes; this bounds only a lost announcement (a bus that cannot see its own gaps).
/// A delivery process that died leaves its sockets' leases in the store until they expire
/// (`presence_lease_secs`, longer than this), so the cache adds nothing to that case.
pub const PRESENCE_TTL: Duration = Duration::from_secs(30);

/// Entries per map before it is emptied (a bound on memory, whatever the traffic).
const MAX_ENTRIES: usize = 100_000;

/// Short-lived registry and presence reads. Cheap to clone.
#[derive(Clone)]
pub struct RegistryCache {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    ttl: Duration,
    maps: Mutex<Maps>,
    /// Moves on every forget: a read that began before one is not remembered (it may have
    /// read what the forget was about).
    generation: AtomicU64,
}

#[derive(Default)]
struct Maps {
    by_key: HashMap<[u8; 32], Entry<(AgentRecord, ApiKeyRecord)>>,
    by_name: HashMap<(String, String), Entry<AgentRecord>>,
    by_id: HashMap<String, Entry<AgentRecord>>,
    presence: HashMap<String, Entry<u32>>,
    /// Agents' suspension records, the absence of one included (most agents have none, and
    /// every route asks about two agents); dropped with the agent's other entries.
    suspensions: HashMap<String, Entry<Option<AgentSuspension>>>,
    /// Whether each agent's current key (by fingerprint) is on the revocation list, the
    /// answer "no" included, as for suspensions.
    revoked_current: HashMap<String, Entry<(String, Option<Revocation>)>>,
    /// Which `by_key` and `by_name` keys hold each agent, so forgetting an agent costs its
    /// own entries, not a scan of every map (events arrive for every socket that opens).
    held: HashMap<String, Held>,
}

/// The keys one agent's entries are under.
#[derive(Default)]
struct Held {
    keys: Vec<[u8; 32]>,
    names: Vec<(String, String)>,
}

impl Maps {
    /// The index entry of `agent_id`, emptied with the maps when it grows past the bound.
    fn held(&mut self, agent_id: &str) -> &mut Held {
        if self.held.len() >= MAX_ENTRIES && !self.held.contains_key(agent_id) {
            // The maps' entries stay; without their index they only live out their TTL
            // unless forgotten all at once. Rare: as many agents as a map's bound.
            self.by_key.clear();
            self.by_name.clear();
            self.held.clear();
        }
        self.held.entry(agent_id.to_owned()).or_default()
    }

    fn forget(&mut self, agent_id: &str) {
        if let Some(held) = self.held.remove(agent_id) {
            for k in held.keys {
                if self.by_key.get(&k).is_some_and(|e| e.agent_id == agent_id) {
                    self.by_key.remove(&k);
                }
            }
            for n in held.names {
                if self.by_name.get(&n).is_some_and(|e| e.agent_id == agent_id) {
                    self.by_name.remove(&n);
                }
            }
        }
        self.by_id.remove(agent_id);
        self.presence.remove(agent_id);
        self.suspensions.remove(agent_id);
        self.revoked_current.remove(agent_id);
    }
}

struct Entry<T> {
    at: Instant,
    agent_id: String,
    value: T,
}

impl RegistryCache {
    /// Reads through to `store`, keeping answers for `ttl` (zero: no cache at all).
    pub fn new(store: Store, ttl: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                ttl,
                maps: Mutex::new(Maps::default()),
                generation: AtomicU64::new(0),
            }),
        }
    }

    fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// The maps, when nothing was forgotten since `generation` was read (else `None`: the
    /// value read meanwhile is not kept).
    fn maps_since(&self, generation: u64) -> Option<std::sync::MutexGuard<'_, Maps>> {
        let maps = self.maps();
        (self.generation() == generation).then_some(maps)
    }

    fn maps(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.inner
            .maps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The agent and key record of an API key hash (see [`crate::auth::agent_for_key`]).
    ///
    /// Fails only on store errors.
    pub async fn agent_by_api_key(
        &self,
        key: &[u8; 32],
    ) -> Result<Option<(AgentRecord, ApiKeyRecord)>, amp_store::Error> {
        let ttl = self.inner.ttl;
        if let Some(hit) = fresh(&self.maps().by_key, key, ttl) {
            return Ok(Some(hit));
        }
        let generation = self.generation();
        let found = self.inner.store.agent_by_api_key(key).await?;
        if let Some(v) = &found
            && !ttl.is_zero()
            && let Some(mut maps) = self.maps_since(generation)
        {
            let held = maps.held(&v.0.id);
            if !held.keys.contains(key) {
                held.keys.push(*key);
            }
            remember(&mut maps.by_key, *key, &v.0.id, v.clone(), ttl);
        }
        Ok(found)
    }

    /// The agent holding `name` in `tenant`.
    ///
    /// Fails only on store errors.
    pub async fn agent_by_name(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<AgentRecord>, amp_store::Error> {
        let ttl = self.inner.ttl;
        let k = (tenant.to_owned(), name.to_owned());
        if let Some(hit) = fresh(&self.maps().by_name, &k, ttl) {
            return Ok(Some(hit));
        }
        let generation = self.generation();
        let found = self.inner.store.agent_by_name(tenant, name).await?;
        if let Some(a) = &found
            && !ttl.is_zero()
            && let Some(mut maps) = self.maps_since(generation)
        {
            let held = maps.held(&a.id);
            if !held.names.contains(&k) {
                held.names.push(k.clone());
            }
            remember(&mut maps.by_name, k, &a.id, a.clone(), ttl);
        }
        Ok(found)
    }

    /// The agent `id`.
    ///
    /// Fails only on store errors.
    pub async fn agent(&self, id: &str) -> Result<Option<AgentRecord>, amp_store::Error> {
        let ttl = self.inner.ttl;
        if let Some(hit) = fresh(&self.maps().by_id, id, ttl) {
            return Ok(Some(hit));
        }
        let generation = self.generation();
        let found = self.inner.store.agent(id).await?;
        if let Some(a) = &found
            && let Some(mut maps) = self.maps_since(generation)
        {
            remember(&mut maps.by_id, id.to_owned(), id, a.clone(), ttl);
        }
        Ok(found)
    }

    /// How many live sessions `agent_id` has at `now` (kept for [`PRESENCE_TTL`], never
    /// longer than the registry entries).
    ///
    /// Fails only on store errors.
    pub async fn presence_count(&self, agent_id: &str, now: i64) -> Result<u32, amp_store::Error> {
        let ttl = self.inner.ttl.min(PRESENCE_TTL);
        if let Some(hit) = fresh(&self.maps().presence, agent_id, ttl) {
            return Ok(hit);
        }
        let generation = self.generation();
        let n = self.inner.store.presence_count(agent_id, now).await?;
        if let Some(mut maps) = self.maps_since(generation) {
            remember(&mut maps.presence, agent_id.to_owned(), agent_id, n, ttl);
        }
        Ok(n)
    }

    /// The suspension record of `agent_id` (spec-next 07), expired or not, or `None`. Unlike
    /// the registry entries, the absence of a record is kept too: a suspension announces
    /// itself ([`ChangeKind::Suspension`](crate::events::ChangeKind::Suspension)), so a
    /// remembered "none" is dropped as a revoked key is, and lives at most the cache's TTL.
    ///
    /// Fails only on store errors.
    pub async fn suspension(
        &self,
        agent_id: &str,
    ) -> Result<Option<AgentSuspension>, amp_store::Error> {
        let ttl = self.inner.ttl;
        if let Some(hit) = fresh(&self.maps().suspensions, agent_id, ttl) {
            return Ok(hit);
        }
        let generation = self.generation();
        let found = self.inner.store.suspension(agent_id).await?;
        if let Some(mut maps) = self.maps_since(generation) {
            remember(
                &mut maps.suspensions,
                agent_id.to_owned(),
                agent_id,
                found.clone(),
                ttl,
            );
        }
        Ok(found)
    }

    /// The revocation list's entry for `fingerprint`, the current key of `agent_id`
    /// (spec-next 07), or `None`. Kept like [`suspension`](Self::suspension), the absence
    /// included: a revocation announces itself ([`ChangeKind::Revoked`]), so a remembered
    /// "not revoked" is dropped by its event and lives at most the cache's TTL. A key
    /// rotation changes the fingerprint asked about, which is then read afresh.
    ///
    /// [`ChangeKind::Revoked`]: crate::events::ChangeKind::Revoked
    ///
    /// Fails only on store errors.
    pub async fn current_key_revocation(
        &self,
        agent_id: &str,
        fingerprint: &str,
    ) -> Result<Option<Revocation>, amp_store::Error> {
        let ttl = self.inner.ttl;
        if let Some((fp, hit)) = fresh(&self.maps().revoked_current, agent_id, ttl)
            && fp == fingerprint
        {
            return Ok(hit);
        }
        let generation = self.generation();
        let found = revocation::revoked(&self.inner.store, fingerprint).await?;
        if let Some(mut maps) = self.maps_since(generation) {
            remember(
                &mut maps.revoked_current,
                agent_id.to_owned(),
                agent_id,
                (fingerprint.to_owned(), found.clone()),
                ttl,
            );
        }
        Ok(found)
    }

    /// Drops everything known about `agent_id` (its keys, its name, its presence).
    pub fn forget(&self, agent_id: &str) {
        let mut maps = self.maps();
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        maps.forget(agent_id);
    }

    /// Drops what is known about `agent_id`'s sessions only (a socket opened or closed).
    pub fn forget_presence(&self, agent_id: &str) {
        let mut maps = self.maps();
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        maps.presence.remove(agent_id);
    }

    /// Applies a registry change announced on the bus.
    pub fn apply(&self, change: &crate::events::RegistryChange) {
        use crate::events::ChangeKind;
        match change.change {
            ChangeKind::Presence => self.forget_presence(&change.agent_id),
            ChangeKind::Purged => self.forget_all(),
            ChangeKind::Revoked
            | ChangeKind::Deregistered
            | ChangeKind::Rotated
            | ChangeKind::Updated
            | ChangeKind::Suspension => self.forget(&change.agent_id),
        }
    }

    /// Drops everything.
    pub fn forget_all(&self) {
        let mut maps = self.maps();
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        *maps = Maps::default();
    }

    /// Keeps the cache in step with the registry changes other processes announce on `bus`
    /// (and empties it when the bus may have missed some), until the bus closes or the cache
    /// is dropped. Nothing to do when the cache is off.
    pub fn follow(&self, bus: &Bus) {
        if self.inner.ttl.is_zero() {
            return;
        }
        let cache = Arc::downgrade(&self.inner);
        let bus = bus.clone();
        tokio::spawn(async move { follow(cache, bus).await });
    }
}

async fn follow(cache: Weak<Inner>, bus: Bus) {
    let mut sub = match bus.subscribe(subjects::REGISTRY_CHANGED).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "registry changes not followed; the cache holds entries for its full lifetime");
            return;
        }
    };
    // A bus that cannot miss events (in-process) has no gaps to watch.
    let (_never, idle) = tokio::sync::watch::channel(0u64);
    let mut gaps = bus.hint_gaps().unwrap_or(idle);
    loop {
        tokio::select! {
            msg = sub.next() => {
                let Some(msg) = msg else { return };
                let Some(inner) = cache.upgrade() else { return };
                let cache = RegistryCache { inner };
                match serde_json::from_slice::<crate::events::RegistryChange>(&msg.payload) {
                    Ok(change) => cache.apply(&change),
                    // Not understood: safest to drop everything.
                    Err(_) => cache.forget_all(),
                }
            }
            changed = gaps.changed() => {
                if changed.is_err() {
                    return;
                }
                let Some(inner) = cache.upgrade() else { return };
                RegistryCache { inner }.forget_all();
            }
        }
    }
}

fn fresh<K, Q, T>(map: &HashMap<K, Entry<T>>, key: &Q, ttl: Duration) -> Option<T>
where
    K: std::borrow::Borrow<Q> + Eq + Hash,
    Q: Eq + Hash + ?Sized,
    T: Clone,
{
    map.get(key)
        .filter(|e| e.at.elapsed() < ttl)
        .map(|e| e.value.clone())
}

fn remember<K: Eq + Hash, T>(
    map: &mut HashMap<K, Entry<T>>,
    key: K,
    agent_id: &str,
    value: T,
    ttl: Duration,
) {
    if ttl.is_zero() {
        return;
    }
    if map.len() >= MAX_ENTRIES {
        map.clear();
    }
    map.insert(
        key,
        Entry {
            at: Instant::now(),
            agent_id: agent_id.to_owned(),
            value,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use amp_store::redb::{RedbConfig, RedbStore};
    use amp_store::testing::{agent, now_ms};

    fn store(dir: &std::path::Path) -> Store {
        Store::new(RedbStore::open(&RedbConfig::in_dir(dir)).expect("open redb"))
    }

    #[tokio::test]
    async fn a_change_made_elsewhere_reaches_the_cache_by_its_event() {
        let dir = tempfile::tempdir().expect("dir");
        let store = store(dir.path());
        let bus = Bus::in_process(amp_bus::InProcessConfig::default());
        let now = now_ms();
        let a = agent("cachet", "alice", now);
        let key = [7u8; 32];
        store
            .create_agent(a.clone(), key, now)
            .await
            .expect("create");
        let here = RegistryCache::new(store.clone(), Duration::from_secs(60));
        here.follow(&bus);
        // Another replica: its own cache over the same store and bus.
        let there = RegistryCache::new(store.clone(), Duration::from_secs(60));
        there.follow(&bus);

        assert!(here.agent_by_api_key(&key).await.expect("read").is_some());
        assert!(
            here.agent_by_name("cachet", "alice")
                .await
                .expect("read")
                .is_some()
        );
        store.revoke_api_keys(&a.id).await.expect("revoke");
        // Kept: the cache answers without reading the store.
        assert!(here.agent_by_api_key(&key).await.expect("read").is_some());

        crate::events::registry_changed(&bus, &there, &a.id, crate::events::ChangeKind::Revoked)
            .await;
        let gone = async {
            while here.agent_by_api_key(&key).await.expect("read").is_some() {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), gone)
            .await
            .expect("the revocation event reached the other cache");
    }

    #[tokio::test]
    async fn forget_applies_at_once_and_off_means_every_read_goes_to_the_store() {
        let dir = tempfile::tempdir().expect("dir");
        let store = store(dir.path());
        let now = now_ms();
        let a = agent("cachef", "bob", now);
        let key = [9u8; 32];
        store
            .create_agent(a.clone(), key, now)
            .await
            .expect("create");
        let cache = RegistryCache::new(store.clone(), Duration::from_secs(60));
        let off = RegistryCache::new(store.clone(), Duration::ZERO);
        assert!(cache.agent_by_api_key(&key).await.expect("read").is_some());
        assert!(off.agent_by_api_key(&key).await.expect("read").is_some());
        store.revoke_api_keys(&a.id).await.expect("revoke");
        assert!(off.agent_by_api_key(&key).await.expect("read").is_none());
        assert!(cache.agent_by_api_key(&key).await.expect("read").is_some());
        cache.forget(&a.id);
        assert!(cache.agent_by_api_key(&key).await.expect("read").is_none());
    }

    /// A socket opening or closing drops the agent's presence only; a purge drops every
    /// agent; forgetting one agent leaves the others' entries.
    #[tokio::test]
    async fn each_change_drops_what_it_is_about() {
        use crate::events::{ChangeKind, RegistryChange};
        let dir = tempfile::tempdir().expect("dir");
        let store = store(dir.path());
        let now = now_ms();
        let (a, b) = (agent("cachek", "ann", now), agent("cachek", "ben", now));
        let (ka, kb) = ([3u8; 32], [4u8; 32]);
        store.create_agent(a.clone(), ka, now).await.expect("a");
        store.create_agent(b.clone(), kb, now).await.expect("b");
        let cache = RegistryCache::new(store.clone(), Duration::from_secs(60));
        let warm = || async {
            assert!(cache.agent_by_api_key(&ka).await.expect("read").is_some());
            assert!(cache.agent_by_api_key(&kb).await.expect("read").is_some());
            assert!(
                cache
                    .agent_by_name("cachek", "ann")
                    .await
                    .expect("r")
                    .is_some()
            );
            assert_eq!(cache.presence_count(&a.id, now).await.expect("r"), 0);
        };
        warm().await;
        // From here on the store says otherwise: only what the cache dropped reads it.
        store.revoke_api_keys(&a.id).await.expect("revoke a");
        store.revoke_api_keys(&b.id).await.expect("revoke b");
        store
            .presence_set(&a.id, "s1", now + 60_000)
            .await
            .expect("presence");
        let change = |id: &str, change| RegistryChange {
            agent_id: id.to_owned(),
            change,
        };

        cache.apply(&change(&a.id, ChangeKind::Presence));
        assert_eq!(cache.presence_count(&a.id, now).await.expect("r"), 1);
        assert!(cache.agent_by_api_key(&ka).await.expect("read").is_some());

        cache.apply(&change(&a.id, ChangeKind::Revoked));
        assert!(cache.agent_by_api_key(&ka).await.expect("read").is_none());
        assert!(cache.agent_by_api_key(&kb).await.expect("read").is_some());

        cache.apply(&change("*", ChangeKind::Purged));
        assert!(cache.agent_by_api_key(&kb).await.expect("read").is_none());
    }
}
