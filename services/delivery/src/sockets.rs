//! The process's open WebSockets per agent: the per-agent cap, and the fan-out of registry
//! changes (key revoked or rotated, agent deregistered) from one bus subscription per process
//! to the sockets of the agent concerned, which then re-check their key.
//!
//! Registry events are best-effort (core bus messages): a lost one is made up for by each
//! socket's periodic re-check (`reauth_secs`), and after the bus reports lost messages every
//! socket re-checks at once.
//!
//! A tenant's suspension (or deletion) closes its sockets within [`TenantGate::TTL`]: one
//! task per process ([`watch_tenants`]) reads the state of each tenant with open sockets
//! here that often and tells their sockets, so the cost is per tenant, not per socket (a
//! timer per socket cost 23 % of a core with 18,000 idle sockets).
//!
//! [`TenantGate::TTL`]: amp_messaging::TenantGate::TTL

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use amp_bus::subjects;
use amp_messaging::events::{ChangeKind, RegistryChange};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::Inner;

/// The open sockets of this process, by agent and by tenant.
pub(crate) struct Sockets {
    max_per_agent: usize,
    /// Per agent: changes of its registration (a counter bumped on each).
    agents: Counted<u64>,
    /// Per tenant: whether it is suspended (or being deleted), as last read.
    tenants: Counted<bool>,
    /// Bumped when every socket must re-check (registry events may have been lost).
    everyone: watch::Sender<u64>,
}

/// Open sockets counted by a key (an agent, a tenant), each key with a watch channel its
/// sockets follow; a key is forgotten with its last socket.
struct Counted<T> {
    keys: Mutex<HashMap<String, Entry<T>>>,
}

struct Entry<T> {
    open: usize,
    tx: watch::Sender<T>,
}

impl<T: Default> Counted<T> {
    fn new() -> Self {
        Self {
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a socket of `key` and follows its channel; `None` when `key` already has
    /// `cap` sockets.
    fn join(&self, key: &str, cap: usize) -> Option<watch::Receiver<T>> {
        let mut keys = self.keys.lock();
        let e = keys.entry(key.to_owned()).or_insert_with(|| Entry {
            open: 0,
            tx: watch::channel(T::default()).0,
        });
        if e.open >= cap {
            return None;
        }
        e.open += 1;
        Some(e.tx.subscribe())
    }

    /// Uncounts a socket of `key`.
    fn leave(&self, key: &str) {
        let mut keys = self.keys.lock();
        if let Some(e) = keys.get_mut(key) {
            e.open = e.open.saturating_sub(1);
            if e.open == 0 {
                keys.remove(key);
            }
        }
    }

    /// Changes `key`'s value (if it has sockets here) with `modify`, which says whether
    /// the sockets are to be told.
    fn modify(&self, key: &str, modify: impl FnOnce(&mut T) -> bool) {
        if let Some(e) = self.keys.lock().get(key) {
            e.tx.send_if_modified(modify);
        }
    }

    /// The keys with open sockets here.
    fn keys(&self) -> Vec<String> {
        self.keys.lock().keys().cloned().collect()
    }
}

/// One open socket: counted until dropped; tells the session when to re-check its key.
pub(crate) struct Socket {
    sockets: Arc<Sockets>,
    agent_id: String,
    tenant: String,
    /// Whether the agent's tenant is suspended (or being deleted), as last read.
    pub(crate) suspended: watch::Receiver<bool>,
    /// Changes of this agent's registration.
    pub(crate) changed: watch::Receiver<u64>,
    /// Possibly lost changes of anyone's.
    pub(crate) everyone: watch::Receiver<u64>,
}

impl Sockets {
    pub(crate) fn new(max_per_agent: usize) -> Self {
        Self {
            max_per_agent: max_per_agent.max(1),
            agents: Counted::new(),
            tenants: Counted::new(),
            everyone: watch::channel(0).0,
        }
    }

    /// The most sockets one agent may hold open on this process.
    pub(crate) fn max_per_agent(&self) -> usize {
        self.max_per_agent
    }

    /// Counts a new socket of `agent_id` of `tenant`; `None` when the agent already holds
    /// the most.
    pub(crate) fn open(self: &Arc<Self>, agent_id: &str, tenant: &str) -> Option<Socket> {
        let changed = self.agents.join(agent_id, self.max_per_agent)?;
        let mut suspended = self.tenants.join(tenant, usize::MAX)?;
        if *suspended.borrow() {
            // Already known suspended: the session sees it at once.
            suspended.mark_changed();
        }
        Some(Socket {
            sockets: self.clone(),
            agent_id: agent_id.to_owned(),
            tenant: tenant.to_owned(),
            suspended,
            changed,
            everyone: self.everyone.subscribe(),
        })
    }

    /// The tenants with open sockets here.
    fn tenants(&self) -> Vec<String> {
        self.tenants.keys()
    }

    /// Tells the sockets of `tenant` (if any here) whether it is suspended, when that
    /// changed.
    fn set_suspended(&self, tenant: &str, suspended: bool) {
        self.tenants.modify(tenant, |s| {
            let changed = *s != suspended;
            *s = suspended;
            changed
        });
    }

    /// Tells the sockets of `agent_id` (if any here) that its registration changed.
    pub(crate) fn changed(&self, agent_id: &str) {
        self.agents.modify(agent_id, |n| {
            *n = n.wrapping_add(1);
            true
        });
    }

    /// Tells every socket to re-check.
    pub(crate) fn changed_all(&self) {
        self.everyone.send_modify(|n| *n = n.wrapping_add(1));
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.sockets.agents.leave(&self.agent_id);
        self.sockets.tenants.leave(&self.tenant);
    }
}

/// Reads, every [`TenantGate::TTL`](amp_messaging::TenantGate::TTL), whether each tenant
/// with open sockets here is suspended, and tells their sockets, until shutdown. A store
/// that cannot be read changes nothing (as a socket's own check did).
pub(crate) async fn watch_tenants(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(amp_messaging::TenantGate::TTL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = inner.shutdown.wait() => return,
            _ = tick.tick() => {}
        }
        for tenant in inner.sockets.tenants() {
            if let Ok(suspended) = inner.acceptor.tenants().is_suspended(&tenant).await {
                inner.sockets.set_suspended(&tenant, suspended);
            }
        }
    }
}

/// Relays registry changes from the bus to the sockets, until shutdown: the process's one
/// subscription to them.
pub(crate) async fn listen(inner: Arc<Inner>) {
    let mut gaps = inner.bus.hint_gaps();
    loop {
        let mut sub = tokio::select! {
            () = inner.shutdown.wait() => return,
            sub = inner.bus.subscribe(subjects::REGISTRY_CHANGED) => match sub {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot subscribe to registry changes; retrying");
                    tokio::select! {
                        () = inner.shutdown.wait() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            },
        };
        // Changes published while there was no subscription are lost: re-check everyone.
        inner.sockets.changed_all();
        loop {
            tokio::select! {
                () = inner.shutdown.wait() => return,
                () = crate::ws::hint_gap(&mut gaps) => inner.sockets.changed_all(),
                m = sub.next() => match m {
                    Some(m) => {
                        if let Ok(c) = serde_json::from_slice::<RegistryChange>(&m.payload) {
                            match c.change {
                                ChangeKind::Presence => {}
                                ChangeKind::Purged => inner.sockets.changed_all(),
                                _ => inner.sockets.changed(&c.agent_id),
                            }
                        }
                    }
                    None => break,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_cap_per_agent_and_release_on_drop() {
        let s = Arc::new(Sockets::new(2));
        let a = s.open("a", "t").expect("first");
        let b = s.open("a", "t").expect("second");
        assert!(s.open("a", "t").is_none(), "third over the cap");
        assert!(s.open("b", "t").is_some(), "another agent is not held back");
        drop(a);
        let c = s.open("a", "t").expect("room again");
        drop((b, c));
        assert!(!s.agents.keys().contains(&"a".to_owned()));
    }

    #[test]
    fn security_changes_reach_the_agents_sockets_only() {
        let s = Arc::new(Sockets::new(4));
        let mut a = s.open("a", "t").expect("a");
        let mut b = s.open("b", "t").expect("b");
        s.changed("a");
        assert!(a.changed.has_changed().expect("open"));
        assert!(!b.changed.has_changed().expect("open"));
        s.changed_all();
        assert!(a.everyone.has_changed().expect("open"));
        assert!(b.everyone.has_changed().expect("open"));
        a.changed.mark_unchanged();
        b.everyone.mark_unchanged();
    }

    /// A tenant's suspension reaches its sockets only, once per change; a socket opened
    /// while it stands sees it at once; the last socket's drop forgets the tenant.
    #[test]
    fn security_a_tenant_suspension_reaches_its_sockets_only() {
        let s = Arc::new(Sockets::new(4));
        let mut a = s.open("a", "t1").expect("a");
        let mut b = s.open("b", "t2").expect("b");
        assert!(!a.suspended.has_changed().expect("open"));
        s.set_suspended("t1", true);
        assert!(a.suspended.has_changed().expect("open"));
        assert!(*a.suspended.borrow_and_update());
        assert!(!b.suspended.has_changed().expect("open"), "another tenant");
        s.set_suspended("t1", true);
        assert!(
            !a.suspended.has_changed().expect("open"),
            "no change, no wake"
        );
        let mut late = s.open("c", "t1").expect("c");
        assert!(late.suspended.has_changed().expect("open"), "told at once");
        assert!(*late.suspended.borrow_and_update());
        s.set_suspended("t1", false);
        assert!(!*a.suspended.borrow_and_update(), "resumed");
        let mut tenants = s.tenants();
        tenants.sort();
        assert_eq!(tenants, ["t1", "t2"]);
        drop((a, late));
        assert_eq!(s.tenants(), ["t2"]);
        b.suspended.mark_unchanged();
    }
}
