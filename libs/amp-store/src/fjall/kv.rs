//! [`Kv`] and [`Presence`] on the embedded fjall store: small values with an optional
//! wall-clock expiry (indexed by time for the purge), and sessions with leases.

use async_trait::async_trait;

use super::keys::{self, Key};
use super::writer::Tx;
use super::{FjallStore, Reads, row};
use crate::*;

/// The `kv_expiry` key of a kv entry's expiry.
fn by_time_key(t: Millis, key: &str) -> Vec<u8> {
    Key::new().i64(t).str(key).done()
}

/// The `presence` key of a session.
fn session_key(agent_id: &str, session: &str) -> Vec<u8> {
    Key::new().str(agent_id).str(session).done()
}

/// Deletes a kv entry and its expiry rows.
pub(super) fn kv_delete_in(txn: &mut Tx<'_>, key: &str) -> Result<()> {
    let k = keys::one(key);
    txn.remove(&txn.ks.kv, &k)?;
    if let Some(t) = txn.take(&txn.ks.kv_expires, &k)? {
        txn.remove(&txn.ks.kv_expiry, &by_time_key(keys::i64_value(&t)?, key))?;
    }
    Ok(())
}

/// The keys of every presence session of an agent.
pub(super) fn sessions_of(r: &impl Reads, agent_id: &str) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for g in r.prefix(&r.ks().presence, &keys::one(agent_id)) {
        out.push(g.key().map_err(super::st)?.to_vec());
    }
    Ok(out)
}

/// The wall clock in unix milliseconds (kv expiry is wall-clock time).
fn wall_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

#[async_trait]
impl Kv for FjallStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let r = self.read()?;
        let k = keys::one(key);
        if let Some(t) = r.get(&r.ks().kv_expires, &k)?
            && keys::i64_value(&t)? <= wall_ms()
        {
            return Ok(None);
        }
        Ok(r.get(&r.ks().kv, &k)?.map(|v| v.to_vec()))
    }

    async fn put(&self, key: &str, value: Vec<u8>, expires_at: Option<Millis>) -> Result<()> {
        let key = key.to_owned();
        self.writer
            .write(move |txn| {
                let k = keys::one(&key);
                txn.insert(&txn.ks.kv, &k, &value)?;
                if let Some(t) = txn.take(&txn.ks.kv_expires, &k)? {
                    txn.remove(&txn.ks.kv_expiry, &by_time_key(keys::i64_value(&t)?, &key))?;
                }
                if let Some(t) = expires_at {
                    txn.insert(&txn.ks.kv_expires, &k, &t.to_be_bytes())?;
                    txn.insert(&txn.ks.kv_expiry, &by_time_key(t, &key), &[])?;
                }
                Ok(())
            })
            .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let key = key.to_owned();
        self.writer.write(move |txn| kv_delete_in(txn, &key)).await
    }
}

#[async_trait]
impl Presence for FjallStore {
    async fn presence_set(&self, agent_id: &str, session: &str, until: Millis) -> Result<()> {
        let key = session_key(agent_id, session);
        self.writer
            .write(move |txn| txn.insert(&txn.ks.presence, &key, &until.to_be_bytes()))
            .await
    }

    async fn presence_clear(&self, agent_id: &str, session: &str) -> Result<()> {
        let key = session_key(agent_id, session);
        self.writer
            .write(move |txn| txn.remove(&txn.ks.presence, &key))
            .await
    }

    async fn presence_count(&self, agent_id: &str, now: Millis) -> Result<u32> {
        let r = self.read()?;
        let mut n = 0;
        for g in r.prefix(&r.ks().presence, &keys::one(agent_id)) {
            let (_, v) = row(g)?;
            if keys::i64_value(&v)? > now {
                n += 1;
            }
        }
        Ok(n)
    }

    async fn agents_online(&self, now: Millis) -> Result<u64> {
        let r = self.read()?;
        let mut n = 0;
        let mut last: Option<String> = None;
        for g in r.range::<std::ops::RangeFull>(&r.ks().presence, ..) {
            let (k, v) = row(g)?;
            let agent = keys::Reader::new(&k).str()?;
            if keys::i64_value(&v)? > now && last.as_deref() != Some(agent.as_str()) {
                n += 1;
                last = Some(agent);
            }
        }
        Ok(n)
    }
}
